"""logs: attempts from their files, the tails kept in the store, silent
attempts, --follow across rotations and for a job not started yet."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path

from queuectl_core.joblogs import attempt_path, dropped_path, job_log_dir, rotated_path
from queuectl_core.models import ExecResult, WorkerInfo
from queuectl_core.timeutil import now_ms
from tests.unit.cli_harness import Cli, Result, one_error_line

# ------------------------------------------------------------------ export / import, config


def test_logs_streams_attempts_and_errors(cli: Cli) -> None:
    cli.add("j", "x")
    one_error_line(cli("logs", "j"), 1, "has not run yet")
    one_error_line(cli("logs", "nope"), 1, "nope")
    for number in (1, 2):
        claim = cli.claim()
        d = cli.log_dir("j")
        attempt_path(d, number, "out").write_bytes(f"out {number}\n".encode())
        attempt_path(d, number, "err").write_bytes(f"err {number}\n".encode())
        cli.store.fail(claim, ExecResult(exit_code=1, error="e"), now_ms(), now_ms())
    res = cli.ok("logs", "j")
    assert (res.out, res.err) == ("out 2\n", "err 2\n")
    res = cli.ok("logs", "j", "--attempt", "1", "--stdout")
    assert (res.out, res.err) == ("out 1\n", "")
    res = cli.ok("logs", "j", "-a", "1", "--stderr")
    assert (res.out, res.err) == ("", "err 1\n")
    one_error_line(cli("logs", "j", "--attempt", "3"), 1, "no attempt 3", "1 to 2")
    one_error_line(cli("logs", "j", "--stdout", "--stderr"), 2, "not both")

    # The size cap: the rotated part comes first, and the drop is reported.
    live = attempt_path(cli.log_dir("j"), 2, "out")
    rotated_path(live).write_bytes(b"older\n")
    dropped_path(live).write_text("123")
    res = cli.ok("logs", "j", "--stdout")
    assert res.out == "older\nout 2\n"
    assert res.err == ("Note: the first 123 bytes of this attempt's stdout were dropped by the "
                       "size cap (output_max_bytes); the newest output follows\n")


def test_logs_fall_back_to_the_tails_in_the_store(cli: Cli) -> None:
    cli.add("t")
    claim = cli.claim()
    cli.store.complete(claim, ExecResult(exit_code=0, stdout_tail="end of out",
                                         stderr_tail="end of err\n"), now_ms())
    res = cli.ok("logs", "t")
    assert res.out == "end of out\n"
    assert res.err == ("Note: the output files of attempt 1 are not on this machine (it ran on "
                       "another one, or they were removed); showing the end of its output "
                       "kept in the store (output_tail_bytes per stream)\nend of err\n")
    cli.add("none")
    claim = cli.claim()
    cli.store.complete(claim, ExecResult(exit_code=0), now_ms())
    one_error_line(cli("logs", "none"), 1, "no output of attempt 1", "kept none")

    cli.add("far")
    claim = cli.claim("far:1:w")
    now = now_ms()
    cli.store.register_worker(WorkerInfo(id="far:1:w", hostname="far", pid=1, started_at=now,
                                         heartbeat_at=now))
    res = cli.ok("logs", "far")
    assert res.out == "" and "runs on another machine (worker far:1:w)" in res.err

    def finish() -> None:
        time.sleep(0.3)
        cli.store.complete(claim, ExecResult(exit_code=0, stdout_tail="far out"), now_ms())

    thread = threading.Thread(target=finish)
    thread.start()
    res = cli.ok("logs", "far", "--follow")
    thread.join()
    assert res.out == "far out\n"
    assert "its output is shown when it finishes" in res.err


def test_logs_of_a_silent_attempt_here_print_nothing(cli: Cli) -> None:
    """The executor creates output files only when a stream writes: an
    attempt that ran on this machine (its worker id names this host) and has
    no files wrote nothing, which is not the same as having run elsewhere."""
    here = f"{socket.gethostname()}:{os.getpid()}:w"
    cli.add("quiet")
    claim = cli.claim(here)
    cli.store.complete(claim, ExecResult(exit_code=0, stdout_tail="", stderr_tail=""), now_ms())
    assert not job_log_dir(cli.home / "logs" / "jobs", "quiet").exists()
    for args in ((), ("--stdout",), ("--stderr",), ("--follow",)):
        res = cli.ok("logs", "quiet", *args)
        assert (res.out, res.err) == ("", ""), args
    # No tails kept (output_tail_bytes 0) and no files: nothing either.
    cli.add("untailed")
    cli.store.complete(cli.claim(here), ExecResult(exit_code=0), now_ms())
    assert cli.ok("logs", "untailed") == Result(0, "", "")

    # Ran here and wrote, but the files are gone: the tails, with the reason.
    cli.add("removed")
    cli.store.complete(cli.claim(here), ExecResult(exit_code=0, stdout_tail="kept\n",
                                                   stderr_tail=""), now_ms())
    res = cli.ok("logs", "removed")
    assert res.out == "kept\n"
    assert res.err.startswith("Note: the output files of attempt 1 were removed from this "
                              "machine; showing the end of its output kept in the store")

    # Only one stream wrote: only its file exists, the other prints nothing.
    cli.add("half")
    claim = cli.claim(here)
    attempt_path(cli.log_dir("half"), 1, "err").write_bytes(b"only err\n")
    cli.store.complete(claim, ExecResult(exit_code=0), now_ms())
    res = cli.ok("logs", "half")
    assert (res.out, res.err) == ("", "only err\n")
    assert cli.ok("logs", "half", "--stdout") == Result(0, "", "")


def test_logs_follow_waits_for_files_that_appear_later(cli: Cli) -> None:
    cli.add("late")
    claim = cli.claim(f"{socket.gethostname()}:{os.getpid()}:w")

    def run() -> None:
        time.sleep(0.4)  # the command is silent at first: no files yet
        d = job_log_dir(cli.home / "logs" / "jobs", "late")
        d.mkdir(parents=True)
        attempt_path(d, 1, "out").write_bytes(b"at last\n")
        time.sleep(0.3)
        cli.store.complete(claim, ExecResult(exit_code=0), now_ms())

    thread = threading.Thread(target=run)
    thread.start()
    res = cli.ok("logs", "late", "--follow")
    thread.join()
    assert (res.out, res.err) == ("at last\n", "")


def test_logs_follow_across_rotations_until_the_attempt_ends(cli: Cli) -> None:
    cli.add("f")
    claim = cli.claim(f"{socket.gethostname()}:{os.getpid()}:w")
    d = cli.log_dir("f")
    live = attempt_path(d, 1, "out")
    err = attempt_path(d, 1, "err")
    live.write_bytes(b"line 0\n")
    err.write_bytes(b"")
    expected = [b"line 0\n"]

    def writer() -> None:
        # The executor's part: append, and now and then rotate (twice in a
        # row once, faster than the reader polls).
        for i in range(1, 40):
            with live.open("ab") as fh:
                fh.write(b"line %d\n" % i)
            expected.append(b"line %d\n" % i)
            if i % 10 == 0:
                os.replace(live, rotated_path(live))
                live.touch()
            if i == 25:
                with live.open("ab") as fh:
                    fh.write(b"quick\n")
                expected.append(b"quick\n")
                os.replace(live, rotated_path(live))
                live.touch()
            time.sleep(0.02 if i != 25 else 0)
        with err.open("ab") as fh:
            fh.write(b"bye\n")
        cli.store.complete(claim, ExecResult(exit_code=0), now_ms())

    thread = threading.Thread(target=writer)
    thread.start()
    res = cli.ok("logs", "f", "--follow")
    thread.join()
    assert res.out == b"".join(expected).decode()
    assert res.err == "bye\n"


def test_logs_follow_waits_for_the_first_attempt(cli: Cli) -> None:
    cli.add("w")

    def run() -> None:
        time.sleep(0.6)
        claim = cli.claim(f"{socket.gethostname()}:{os.getpid()}:w")
        attempt_path(cli.log_dir("w"), 1, "out").write_bytes(b"started\n")
        time.sleep(0.3)
        cli.store.complete(claim, ExecResult(exit_code=0), now_ms())

    thread = threading.Thread(target=run)
    thread.start()
    res = cli.ok("logs", "w", "-f", "--stdout")
    thread.join()
    assert res.out == "started\n"
    assert res.err == "Note: job w has not started yet (pending); waiting for it to run\n"

    cli.add("gone")
    threading.Timer(0.3, lambda: cli.store.cancel("gone", now_ms())).start()
    res = cli("logs", "gone", "-f")
    assert res.code == 1 and res.err.splitlines()[-1] == (
        "Error: job 'gone' ended cancelled without running")


def test_follower_handles_rotation_deterministically(tmp_path: Path) -> None:
    from queuectl_core.cli.logs import Follower

    live = tmp_path / "attempt-1.out"
    rot = rotated_path(live)
    sink = io.BytesIO()
    follower = Follower(live, sink)
    assert not follower.pump(), "no file yet: nothing to copy"

    def append(data: bytes) -> None:
        with live.open("ab") as fh:
            fh.write(data)

    def rotate() -> None:
        os.replace(live, rot)

    append(b"a1 ")
    assert follower.pump() and sink.getvalue() == b"a1 "
    append(b"a2 ")
    rotate()  # the new live file does not exist yet: keep reading the old one
    assert follower.pump() and sink.getvalue() == b"a1 a2 "
    assert not follower.pump()
    append(b"b1 ")
    assert follower.pump() and sink.getvalue() == b"a1 a2 b1 "
    # Twice between two looks: b's end, then all of c (now .1), then d.
    append(b"b2 ")
    rotate()
    append(b"c1 ")
    rotate()
    append(b"d1 ")
    assert follower.pump()
    assert sink.getvalue() == b"a1 a2 b1 b2 c1 d1 "
    assert not follower.pump()
    follower.close()

    # Starting late: the rotated part first, then the live file.
    sink2 = io.BytesIO()
    late = Follower(live, sink2)
    assert late.pump() and sink2.getvalue() == b"c1 d1 "
    late.close()
