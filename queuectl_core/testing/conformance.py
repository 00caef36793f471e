"""The backend conformance kit: every promise of the storage seam
(:mod:`queuectl_core.storage`) as pytest tests.

Subclass :class:`StorageConformance` in your backend's tests and implement
``open_storage(home)``. Time is passed explicitly everywhere, so the kit
controls the clock and never sleeps. Most tests drive the store through the
core's :class:`~queuectl_core.ledger.Ledger`, as the worker and the CLI do:
they check that the store keeps what the core decides, atomically and
fenced. ``SeamPromises`` checks the seam's methods directly.

Set ``supports_processes = False`` for a store that lives in one process
(the multi-process claim test is then skipped) and ``persistent = False``
for one that does not survive being closed. The schedule tests
(``kit_schedules``) skip themselves for a backend without schedules.
"""

from __future__ import annotations

from .kit import BOOM, LEASE, OK, T0, new_job
from .kit_claims import ClaimPromises
from .kit_graph import GraphPromises
from .kit_limits import LimitPromises
from .kit_operations import OperationPromises
from .kit_schedules import SchedulePromises
from .kit_seam import SeamPromises

__all__ = ["BOOM", "LEASE", "OK", "T0", "StorageConformance", "new_job"]


class StorageConformance(SeamPromises, ClaimPromises, OperationPromises, LimitPromises,
                         GraphPromises, SchedulePromises):
    """Mix into a pytest test class; implement ``open_storage(home)``."""
