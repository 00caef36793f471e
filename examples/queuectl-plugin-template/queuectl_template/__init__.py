"""A queuectl plugin to copy: the ``steps`` retry policy and the ``dlqfile``
notifier. ``plugin`` is the entry point."""
