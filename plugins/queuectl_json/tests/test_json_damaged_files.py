"""Damaged files are errors that name the file and are left alone; a torn
last journal line (a writer that died mid-append) is skipped, then cut off
and kept aside."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from json_store_helpers import finish_some, journal, raw

from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import JobState
from queuectl_core.testing.conformance import T0, new_job
from queuectl_json.store import FORMAT_VERSION, JsonStorage, job_file_name


@pytest.fixture
def store(root: Path) -> Iterator[Ledger]:
    s = Ledger(JsonStorage(root, compact_bytes=4096))
    yield s
    s.close()


def test_a_damaged_snapshot_is_an_error_naming_it_and_is_left_alone(store: Ledger,
                                                                    root: Path) -> None:
    finish_some(store)
    raw(store).compact()
    path = root / "snapshot.json"
    good = path.read_bytes()
    for damaged in (good[: len(good) // 2], b"", b"\x00" * 40,
                    good.replace(b'"queuectl-json"', b'"something-else"')):
        path.write_bytes(damaged)
        with pytest.raises(StorageError, match=str(path)) as err:
            JsonStorage(root)
        assert "backup" in str(err.value)
        with pytest.raises(StorageError, match=str(path)):
            store.enqueue([new_job("x")])  # an open instance notices too
        assert path.read_bytes() == damaged
    path.write_bytes(good)
    assert store.get("a") is not None


def test_a_newer_format_is_refused(store: Ledger, root: Path) -> None:
    raw(store).compact()
    path = root / "snapshot.json"
    doc = path.read_bytes().replace(f'"version":{FORMAT_VERSION}'.encode(), b'"version":99')
    assert b'"version":99' in doc
    path.write_bytes(doc)
    with pytest.raises(StorageError, match="newer"):
        JsonStorage(root)
    assert path.read_bytes() == doc


def test_a_missing_snapshot_never_starts_an_empty_queue(store: Ledger, root: Path) -> None:
    finish_some(store)
    store.close()
    (root / "snapshot.json").unlink()
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(StorageError, match="snapshot"):
        JsonStorage(root)
    assert sorted(p.name for p in root.iterdir()) == before


@pytest.mark.parametrize("bad", [b"not json", b'{"ops": 1}', b'{"ops":[{"op":"explode"}]}',
                                 b'{"ops":[{"op":"set","id":"nope","fields":{}}]}', b"",
                                 b'{"ops":[{"op":"import","jobs":[{"id":"x"}]}]}',
                                 b'{"ops":[{"op":"import","jobs":{}}]}',
                                 b'{"ops":[{"op":"imported","ids":[1]}]}'])
def test_a_damaged_journal_line_before_the_last_is_an_error_naming_it(
        store: Ledger, root: Path, bad: bytes) -> None:
    store.enqueue([new_job("a")])
    store.enqueue([new_job("b")])
    store.enqueue([new_job("c")])
    path = journal(root)
    lines = path.read_bytes().split(b"\n")
    lines[1] = bad
    damaged = b"\n".join(lines)
    path.write_bytes(damaged)
    with pytest.raises(StorageError, match=rf"{path}, line 2,"):
        JsonStorage(root)
    with pytest.raises(StorageError, match=str(path)):
        store.list_jobs()  # an open instance notices the journal changed under it
    assert path.read_bytes() == damaged


def test_a_damaged_finished_job_file_is_an_error_wherever_it_is_read(store: Ledger,
                                                                    root: Path) -> None:
    finish_some(store)
    name = job_file_name("a")
    path = root / "jobs" / name[:2] / name
    for damaged in (b'{"id": "a", "state": "comp', b"[]", path.read_bytes().replace(
            b'"id":"a"', b'"id":"zz"')):
        path.write_bytes(damaged)
        for call in (lambda: store.get("a"), lambda: store.attempts("a"),
                     lambda: store.list_jobs(), lambda: store.list_jobs(JobState.COMPLETED),
                     lambda: store.dlq_retry("a", T0), lambda: store.cancel("a", T0),
                     lambda: store.purge(states=[JobState.COMPLETED])):
            with pytest.raises(StorageError, match=str(path)):
                call()
        assert path.read_bytes() == damaged
    # Active jobs and other files are unaffected.
    assert store.get("b") is not None and store.list_jobs(JobState.PENDING)


def test_a_torn_last_journal_line_is_skipped_then_cut_off_and_kept(store: Ledger,
                                                                   root: Path) -> None:
    store.enqueue([new_job("a")])
    other = Ledger(JsonStorage(root))
    path = journal(root)
    torn = b'{"ops":[{"op":"enqueue","jobs":[{"id":"ghost"'
    with path.open("ab") as fh:
        fh.write(torn)
    before = path.read_bytes()
    # Readers skip it and leave the file alone ...
    assert [j.id for j in store.list_jobs()] == ["a"]
    assert store.get("ghost") is None and store.counts()[JobState.PENDING] == 1
    assert path.read_bytes() == before
    # ... the next writer (or opening, which may write) cuts it off, keeping
    # its bytes aside, and appends cleanly.
    other.enqueue([new_job("b")])
    assert torn not in path.read_bytes()
    assert path.read_bytes().startswith(before[: -len(torn)])
    [kept] = root.glob("journal-*.torn-*")
    assert kept.read_bytes() == torn
    assert all(json.loads(line) for line in path.read_text().splitlines())
    fresh = Ledger(JsonStorage(root))
    assert [j.id for j in fresh.list_jobs()] == ["a", "b"]
    assert fresh.get("ghost") is None
    for s in (other, fresh):
        s.close()
