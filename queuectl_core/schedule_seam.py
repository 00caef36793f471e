"""The optional part of the storage seam for recurring schedules.

:class:`~queuectl_core.storage.Storage` inherits these methods; by default
they say the backend does not support schedules. A backend that does sets
``supports_schedules = True`` and overrides all of them, keeping these
promises (the conformance kit's ``kit_schedules`` checks them):

* **Compare-and-set.** :meth:`put_schedule` creates a schedule only if no
  schedule has its name (``expect_version`` None), else replaces it only if
  the stored one is still at ``expect_version``.
* **One fire, all or nothing.** :meth:`fire_schedule` makes a
  :class:`~queuectl_core.schedule_records.Fire` in one transaction: the
  schedule's new state fenced on its version, its firing records (unique on
  schedule, tick and whether the firing is manual), its jobs (unique ids).
  Any conflict changes nothing and gives False: another process fired
  those ticks first.

The store decides nothing: :mod:`queuectl_core.schedules` does.
"""

from __future__ import annotations

from .errors import StorageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .schedule_records import Fire, Firing, Schedule


class SchedulesUnsupportedError(StorageError):
    """The selected backend stores no schedules (exit 1)."""


class ScheduleStorage:
    """Schedule methods of a store (see the module's docstring)."""

    #: True for a backend that implements the methods below.
    supports_schedules = False

    def _no_schedules(self) -> SchedulesUnsupportedError:
        describe = getattr(self, "describe", None)
        what = describe() if callable(describe) else type(self).__name__
        return SchedulesUnsupportedError(
            f"this backend ({what}) does not support schedules")

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        raise self._no_schedules()

    def get_schedule(self, name: str) -> Schedule | None:
        raise self._no_schedules()

    def put_schedule(self, schedule: Schedule, expect_version: int | None) -> bool:
        """Create (``expect_version`` None: only if the name is free) or
        replace (only if still at ``expect_version``). False if not done."""
        raise self._no_schedules()

    def remove_schedule(self, name: str) -> bool:
        """Forget a schedule (its jobs and firing records stay). False if
        there was none."""
        raise self._no_schedules()

    def fire_schedule(self, fire: Fire) -> bool:
        """Make ``fire`` whole, or nothing (False) on any conflict."""
        raise self._no_schedules()

    def schedule_firings(self, name: str, limit: int = 10) -> list[Firing]:
        """The schedule's firing records, newest tick first."""
        raise self._no_schedules()

    def prune_firings(self, before: int, keep: int) -> int:
        """Delete firing records recorded before ``before``, except each
        schedule's newest ``keep``. How many were deleted."""
        raise self._no_schedules()


def prunable(firings: Sequence[Firing], before: int, keep: int) -> list[Firing]:
    """Of ``firings`` (any schedules), those :meth:`ScheduleStorage.prune_firings`
    deletes: older than ``before`` and not among their schedule's newest ``keep``."""
    by_schedule: dict[str, list[Firing]] = {}
    for f in firings:
        by_schedule.setdefault(f.schedule, []).append(f)
    doomed: list[Firing] = []
    for group in by_schedule.values():
        group.sort(key=lambda f: (f.tick, f.manual), reverse=True)
        doomed.extend(f for f in group[keep:] if f.at < before)
    return doomed
