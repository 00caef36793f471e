"""queuectl storage on a Redis server: an example of a third-party backend
(see README.md). ``plugin`` is the entry point; ``store`` the store."""
