"""queuectl's SQLite storage backend (the default).

The package imports nothing: the hook implementation is in ``plugin`` (the
entry point), the store in ``store``, its schema in ``schema`` and its
queries in ``sql``.
"""

from __future__ import annotations
