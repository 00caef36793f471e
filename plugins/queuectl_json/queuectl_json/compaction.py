"""Creating a store, compacting it (folding the journal into a new
snapshot), and rebuilding its index: what touches the snapshot, the job
files and the index together. Under the exclusive lock."""

from __future__ import annotations

from queuectl_core.errors import StorageError

from .files import Files
from .index import Index
from .journal import SNAPSHOT, Journal
from .state import INDEX_VERSION, State


def create(files: Files, index: Index, journal: Journal) -> bool:
    """Create what is missing (a new store: its first snapshot). True if an
    existing store has lost its index directory."""
    files.mkdir(files.jobs_dir)
    files.mkdir(files.tmp_dir)
    if journal.snapshot_path.exists():
        # (Only a rebuild creates the index of an existing store, so a crash
        # half-way through one leaves it to the next open.)
        return not index.exists()
    journals = journal.has_journals()
    if journals or files.has_finished_files():
        raise StorageError(
            f"JSON store {files.directory} has no {SNAPSHOT} but holds "
            f"{'journal files' if journals else 'job files'}: the snapshot was lost. "
            f"Restore {journal.snapshot_path} from a backup; queuectl will not start an "
            "empty queue over the old one")
    index.create()
    journal.write_snapshot(1)
    return False


def rebuild_index(index: Index, state: State) -> None:
    """Build the index from the job files, but for the jobs the journal
    knows better (active, purged, finished since the snapshot)."""
    index.rebuild(lambda job_id: job_id in state.jobs or job_id in state.purged
                  or job_id in state.fresh)


def compact(files: Files, index: Index, journal: Journal) -> None:
    """Write snapshot G+1 (atomically: it is the commit point), then remove
    the journal of G and leftovers, with the state up to date. The new
    snapshot forgets the journal, so first everything the journal alone
    stood for is put in files: purged jobs' files are removed (a crash may
    have left some), imported jobs' files are written, and the jobs that
    finished since the last snapshot go into the index (for a store of a
    format without the index, or one whose index was removed, it is built)."""
    state = journal.state
    files.remove_finished(state.purged)
    files.write_finished(state.unwritten.values())
    if state.version < INDEX_VERSION or not index.exists():
        rebuild_index(index, state)
    index.append(state.fresh)
    journal.write_snapshot(journal.generation + 1)
    journal.remove_older_journals()
    files.clear_tmp()
