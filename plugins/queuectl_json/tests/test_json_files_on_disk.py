"""What the JSON store writes: its layout, human-readable files with every
job field, private permissions, and the plugin's options and factory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from json_store_helpers import claim, finish_some, job_path, journal, journal_ops, raw

from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, JobState
from queuectl_core.registry import PluginContext
from queuectl_core.testing.conformance import LEASE, OK, T0, new_job
from queuectl_json.options import JsonOptions
from queuectl_json.plugin import queuectl_storage_backends
from queuectl_json.store import FORMAT_VERSION, JsonStorage, job_file_name

ENV = {"LANG": "C.UTF-8", "ÜNI": "värde = \"1\"\n", "EMPTY": ""}
RETRY = {"policy": "linear", "backoff_base": 3.5, "max_delay": 60.0, "jitter": 0.25}


def test_layout_keeps_active_jobs_in_the_snapshot_and_finished_ones_in_files(
        store: Ledger, root: Path) -> None:
    finish_some(store)
    odd = "dir/with slash ü"
    store.enqueue([new_job(odd, priority=10)])
    store.complete(claim(store), OK, T0 + 2)
    raw(store).compact()
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["format"] == "queuectl-json" and snap["version"] == FORMAT_VERSION
    assert snap["finished"] == {"default": {"completed": 2, "dead": 1, "cancelled": 0,
                                            "skipped": 0}}
    assert snap["paused"] == []
    assert sorted(j["id"] for j in snap["jobs"]) == ["c", "d", "e"], "only active jobs"
    [held] = [j for j in snap["jobs"] if j["id"] == "d"]
    assert held["claim_token"] == store.get("d").claim_token  # type: ignore[union-attr]
    name = job_file_name(odd)
    assert len(name) == 64 + 5 and "/" not in name
    doc = json.loads(job_path(root, odd).read_text())
    assert doc["id"] == odd and doc["state"] == "completed" and len(doc["history"]) == 1
    assert "claim_token" not in doc, "finished jobs' files hold no claim"
    assert (root / f"journal-{snap['generation']}.jsonl").read_text() == (
        f'{{"ops":[],"journal":{snap["generation"]}}}\n'), "only its header after compact"
    store.set_setting("max_retries", 5)
    line = json.loads(journal(root).read_text().splitlines()[-1])
    assert line == {"ops": [{"op": "setting", "key": "max_retries", "value": 5}]}


def test_files_and_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)  # the modes must come from the store, not from the umask
    try:
        root = tmp_path / "store"
        store = Ledger(JsonStorage(root, compact_bytes=4096))
        finish_some(store)
        raw(store).compact()
        store.set_setting("k", 1)
        with journal(root).open("ab") as fh:
            fh.write(b'{"ops":[')  # a torn line: its bytes are kept in a side file
        store.set_setting("k", 2)
        store.close()
    finally:
        os.umask(old)
    assert list(root.glob("journal-*.torn-*"))
    seen = {"dirs": 0, "files": 0}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        kind = "dirs" if path.is_dir() else "files"
        seen[kind] += 1
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
    assert seen["dirs"] >= 4 and seen["files"] >= 5


def test_the_plugin_opens_a_store_from_its_options(tmp_path: Path) -> None:
    opts = JsonOptions()
    assert (opts.path, opts.fsync) == ("json", True)
    with pytest.raises(ValueError):
        JsonOptions.model_validate({"pth": "x"})
    [spec] = list(queuectl_storage_backends())
    assert spec.name == "json"
    factory = spec.resolve_factory()
    for options, where, fsync in ((JsonOptions(path="sub/q", fsync=False), "sub/q", False),
                                  (None, "json", True)):
        store = factory(options, PluginContext(home=tmp_path))
        try:
            assert isinstance(store, JsonStorage)
            assert store.directory == tmp_path / where and store.fsync is fsync
            assert store.describe() == f"json {tmp_path / where}"
            assert store.local_paths() == [tmp_path / where]
        finally:
            store.close()


def test_every_job_field_is_in_every_file_and_reads_back_exactly(store: Ledger,
                                                                 root: Path) -> None:
    store.enqueue([new_job("full", queue="mail.out-2", timeout=1.5, cwd="/tmp/wörk dir",
                           env=ENV, retry=RETRY, priority=2),
                   new_job("waiting", queue="slow", timeout=30.0, env={"X": "ÿ"}),
                   new_job("doomed")])
    assert store.set_queue_paused("slow", True)
    tails = ExecResult(exit_code=0, stdout_tail="last ✓ line\n\x1b[0m", stderr_tail="wärn\n")
    store.complete(claim(store), tails, T0 + 1)
    running = claim(store)
    assert running.job.id == "doomed"
    store.cancel("doomed", T0 + 2)
    store.fail(running, ExecResult(signal=15, error="killed", stderr_tail="bye"), T0 + 3,
               T0 + 9)
    ops = journal_ops(root)
    [enqueued] = [op for op in ops if op["op"] == "enqueue"]
    assert enqueued["jobs"][0]["env"] == ENV and enqueued["jobs"][0]["retry"] == RETRY
    assert {"op": "pause", "queue": "slow", "paused": True} in ops
    assert [op["state"] for op in ops if op["op"] == "finish"] == ["completed", "cancelled"]
    full = json.loads(job_path(root, "full").read_text(encoding="utf-8"))
    assert (full["queue"], full["timeout"], full["cwd"], full["env"], full["retry"]) == (
        "mail.out-2", 1.5, "/tmp/wörk dir", ENV, RETRY)
    assert "wörk" in job_path(root, "full").read_text(encoding="utf-8"), "readable UTF-8"
    assert full["history"][0]["stdout_tail"] == "last ✓ line\n\x1b[0m"
    doomed = json.loads(job_path(root, "doomed").read_text())
    assert doomed["state"] == "cancelled" and doomed["history"][0]["outcome"] == "cancelled"
    assert doomed["history"][0]["stderr_tail"] == "bye"

    def observed(s: Ledger) -> Any:
        return (s.list_jobs(), {j.id: s.attempts(j.id) for j in s.list_jobs()},
                s.counts(), s.counts("mail.out-2"), s.paused_queues())

    before = observed(store)
    other = Ledger(JsonStorage(root))  # replays the journal, checking every record
    assert observed(other) == before
    raw(store).compact()
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["version"] == FORMAT_VERSION == 3 and snap["paused"] == ["slow"]
    assert snap["finished"] == {
        "default": {"completed": 0, "dead": 0, "cancelled": 1, "skipped": 0},
        "mail.out-2": {"completed": 1, "dead": 0, "cancelled": 0, "skipped": 0}}
    [waiting] = snap["jobs"]
    assert waiting["env"] == {"X": "ÿ"} and waiting["timeout"] == 30.0
    for s in (store, other, Ledger(JsonStorage(root))):
        assert observed(s) == before
        job = s.get("full")
        assert job is not None and job.env == ENV and type(job.timeout) is float
        assert s.counts()[JobState.CANCELLED] == 1
        assert s.list_jobs(JobState.CANCELLED) == [s.get("doomed")]
        assert [j.id for j in s.list_jobs(queue="slow")] == ["waiting"]
        assert s.claim("w", T0 + 10**6, LEASE) is None, "its queue is paused"
    other.close()


def test_enqueue_refuses_a_record_that_could_not_be_read_back(store: Ledger,
                                                              root: Path) -> None:
    store.enqueue([new_job("fine")])
    for bad in (new_job("nul", env={"A": "x\x00y"}), new_job("r", retry={"nope": 1}),
                new_job("t", timeout=float("inf"))):
        with pytest.raises(StorageError, match="cannot enqueue"):
            store.enqueue([new_job("ok"), bad])
    assert [j.id for j in Ledger(JsonStorage(root)).list_jobs()] == ["fine"]


def test_returned_jobs_do_not_share_the_stored_dicts(store: Ledger) -> None:
    store.enqueue([new_job("a", env={"K": "v"})])
    job = store.get("a")
    assert job is not None and job.env is not None
    job.env["K"] = "changed"
    assert store.get("a").env == {"K": "v"}  # type: ignore[union-attr]
