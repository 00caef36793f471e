"""Worker commands: start (background), run (foreground), stop."""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

import click

from ..errors import STORE_DAMAGED_EXIT, ConfigError, QueuectlError, StoreDamagedError
from .main import State, pass_state
from .params import DURATION

if TYPE_CHECKING:
    from ..app import App
    from ..worker.signals import StopSignal

count_option = click.option("--count", "-n", type=click.IntRange(1, 256), default=1,
                            show_default=True, help="Number of worker processes.")


def _parse_queues(ctx: click.Context, param: click.Parameter, value: str | None
                  ) -> list[str] | None:
    """``--queue a,b`` (or repeated) -> ["a", "b"], each name checked."""
    if not value:
        return None
    from ..jobspec import queue_name_problem

    names: list[str] = []
    for part in value.split(","):
        name = part.strip()
        problem = queue_name_problem(name)
        if problem is not None:
            raise click.BadParameter(f"queue name {name!r}: {problem}")
        if name not in names:
            names.append(name)
    return names


queue_option = click.option(
    "--queue", "-q", "queues", metavar="Q1,Q2", callback=_parse_queues,
    help="Serve only these queues (comma-separated). Default: every queue.")


@click.group()
def worker() -> None:
    """Start, run and stop worker processes.

    \b
    queuectl worker start --count 3   # in the background; returns at once
    queuectl worker run --count 3     # in the foreground (systemd, containers)
    queuectl worker stop              # from any terminal
    """


def _child_argv(state: State, queues: list[str] | None) -> list[str]:
    argv = [sys.executable, "-P", "-m", "queuectl_core.cli.main", *state.child_global_args(),
            "worker", "_child"]
    if queues:
        argv += ["--queue", ",".join(queues)]
    return argv


def _release_dead(state: State, pids: list[int], *, charge_attempt: bool) -> None:
    """Give back the jobs of worker processes that are gone: crashed
    (``charge_attempt``: the attempt counts) or killed by ``worker stop``
    (it does not)."""
    from ..timeutil import now_ms
    from ..worker.held import held_dir
    from ..worker.housekeeping import release_dead_worker

    app = state.app()
    host = socket.gethostname()
    for record in app.ledger.list_workers():
        if record.hostname == host and record.pid in pids:
            release_dead_worker(app.ledger, app.plugins, record, now_ms(),
                                charge_attempt=charge_attempt,
                                held_dir=held_dir(app.config.home))


def _check_setup(state: State) -> None:
    """Open everything a worker needs, so that a broken backend, executor or
    retry policy is reported here and not only in a log file."""
    from ..security import check_home_trusted

    app = state.app()
    check_home_trusted(app, "run workers")
    executor = app.executor()
    problem = executor.check()
    close = getattr(executor, "close", None)
    if close is not None:
        close()
    if problem is not None:
        raise ConfigError(f"executor {app.config.executor_name()!r}: {problem}")
    app.backoff_policy()
    app.settings()


def _running(state: State, pids: list[int]) -> list[str]:
    """The jobs the workers ``pids`` of this machine are running now."""
    from ..worker.held import held_dir, running_jobs

    app = state.app()
    return running_jobs(app.ledger, held_dir(app.config.home), socket.gethostname(), pids)


def _jobs_text(ids: list[str]) -> str:
    """``3 running jobs (a, b, c)``, at most 10 ids shown."""
    from .output import printable

    shown = ", ".join(printable(i) for i in ids[:10])
    more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
    return f"{len(ids)} running job{'s' if len(ids) != 1 else ''} ({shown}{more})"


def _announce_stop(state: State, signals: int, pids: list[int]) -> None:
    """What a stop signal to ``worker run`` does now, on stderr (the log)."""
    ids = _running(state, pids)
    if signals == 1 and not ids:
        click.echo("Stopping: no job is running.", err=True)
    elif signals == 1:
        again = "press Ctrl-C again" if sys.stdin.isatty() else "send SIGTERM again"
        click.echo(f"Stopping: finishing {_jobs_text(ids)}; {again} to kill them "
                   "(they run again later).", err=True)
    elif ids:
        click.echo(f"Stopping now: killing {_jobs_text(ids)}; they will run again.",
                   err=True)


def _supervise(state: State, count: int, queues: list[str] | None) -> int:
    from ..worker.supervisor import Supervisor, configure_logging

    configure_logging()
    app = state.app()
    _check_setup(state)
    supervisor = Supervisor(home=app.config.home, count=count,
                            child_argv=_child_argv(state, queues),
                            on_worker_crash=lambda pid: _release_dead(state, [pid],
                                                                      charge_attempt=True),
                            on_stop=lambda signals, pids: _announce_stop(state, signals, pids))
    pids = supervisor.start()
    serving = f"; queues: {', '.join(queues)}" if queues else ""
    click.echo(f"Supervisor {supervisor.run_file.stem.split('-')[1]} running {count} "
               f"worker(s): {', '.join(map(str, pids))} ({app.ledger.describe()}{serving})",
               err=True)
    return supervisor.wait()


@worker.command("run")
@count_option
@queue_option
@pass_state
def run(state: State, count: int, queues: list[str] | None) -> None:
    """Run workers in the foreground until Ctrl-C or SIGTERM.

    The first signal lets every worker finish its current job and exit; a
    second one kills running jobs (they are released and run again later).
    Crashed workers are restarted. Logs go to stderr.
    """
    sys.exit(_supervise(state, count, queues))


@worker.command("start")
@count_option
@queue_option
@click.option("--add", is_flag=True,
              help="Start these workers beside those already running for this queue.")
@pass_state
def start(state: State, count: int, queues: list[str] | None, add: bool) -> None:
    """Start workers in the background and return at once.

    Prints the worker PIDs. Output of the workers goes to
    $QUEUECTL_HOME/logs/workers.log. Stop them with 'queuectl worker stop'.
    While workers of this queue run on this machine, starting more takes
    --add.
    """
    from ..security import check_home_trusted
    from ..worker.supervisor import read_groups, spawn_detached, wait_for_group

    app = state.app()
    # Before reading its run files; the store is checked by _check_setup.
    check_home_trusted(app, "run workers", store=False)
    running = read_groups(app.config.home)
    if running and not add:
        workers = sum(p != group.pid for group in running for p in group.live_pids())
        pids = ", ".join(str(group.pid) for group in running)
        raise QueuectlError(
            f"workers are already running for this queue: {workers} worker(s) under "
            f"supervisor{'s' if len(running) > 1 else ''} {pids}; to start more beside them: "
            "queuectl worker start --add (or stop them first: queuectl worker stop)")
    _check_setup(state)
    log_path = app.config.home / "logs" / "workers.log"
    argv = [sys.executable, "-P", "-m", "queuectl_core.cli.main", *state.child_global_args(),
            "worker", "run", "--count", str(count)]
    if queues:
        argv += ["--queue", ",".join(queues)]
    serving = f" for queue{'s' if len(queues) > 1 else ''} {', '.join(queues)}" if queues else ""
    try:  # before saying "Starting": a log that cannot be written is the error
        proc = spawn_detached(argv, log_path)
    except OSError as exc:
        raise QueuectlError(f"cannot write the worker log {log_path}: "
                            f"{exc.strerror or exc}") from None
    click.echo(f"Starting {count} worker process{'es' if count != 1 else ''}{serving}...")
    group = wait_for_group(app.config.home, proc, count, timeout=30.0)
    if group is None:
        raise QueuectlError(f"workers did not start; see {log_path}")
    for i, worker_pid in enumerate(group.workers, 1):
        click.echo(f"Worker {i} started with PID: {worker_pid}")
    click.echo(f"Supervisor PID: {proc.pid}; log: {log_path}")


@worker.command("stop")
@click.option("--timeout", type=DURATION, default="60s", show_default=True,
              metavar="DURATION",
              help="How long running jobs may take to finish before they are killed "
                   "(and released to run again): seconds, or e.g. 30s, 5m, 1h30m.")
@pass_state
def stop(state: State, timeout: int) -> None:
    """Stop every worker of this QUEUECTL_HOME, from any terminal.

    Workers stop claiming, finish their current job and exit; this returns
    when they have exited. After --timeout, running jobs are killed and
    released, so they run again later.
    """
    from ..security import check_home_trusted
    from ..worker.supervisor import read_groups, stop_groups

    app = state.app()
    # The run files name the processes to signal: only from a trusted home.
    check_home_trusted(app, "stop workers", store=False)
    groups = read_groups(app.config.home)
    if not groups:
        click.echo("No workers are running.")
        return
    click.echo("Stopping all workers...")

    def waiting_for(pids: list[int]) -> str | None:
        ids = _running(state, pids)
        return (f"Waiting for {_jobs_text(ids)} to finish (at most {timeout / 1000:g}s, "
                "then they are killed and run again later)...") if ids else None

    stop_groups(groups, timeout / 1000,
                on_forced=lambda pids: _release_dead(state, pids, charge_attempt=False),
                echo=click.echo, waiting_for=waiting_for)
    click.echo("All workers stopped.")


def _open_storage_patiently(app: App, stop_signal: StopSignal) -> bool:
    """A worker started while its database is unreachable waits for it
    (with backoff) instead of exiting; False if told to stop meanwhile."""
    import logging

    from ..errors import TransientStorageError
    from ..worker.loop import MAX_OUTAGE_WAIT_S

    delay = 0.5
    while not stop_signal.graceful:
        try:
            app.ledger  # noqa: B018 - opens it
            return True
        except TransientStorageError as exc:
            logging.getLogger("queuectl.worker").warning(
                "storage unavailable (%s); retrying in %.1fs", exc, delay)
            stop_signal.sleep(delay)
            delay = min(MAX_OUTAGE_WAIT_S, delay * 2)
    return False


@worker.command("_child", hidden=True)
@click.option("--parent-pid", type=int, required=True)
@queue_option
@pass_state
def child(state: State, parent_pid: int, queues: list[str] | None) -> None:
    """One worker process (started by the supervisor)."""
    import logging

    from ..wakeup import WakeupListener
    from ..worker.held import held_dir
    from ..worker.loop import Worker
    from ..worker.procs import become_subreaper
    from ..worker.signals import StopSignal
    from ..worker.supervisor import configure_logging

    configure_logging()
    # What a command leaves behind outside its process group (setsid, a
    # double fork) becomes this worker's child when orphaned, so that the
    # executor ends it with the attempt.
    become_subreaper()
    stop_signal = StopSignal()
    stop_signal.install()
    app = state.app()
    if not _open_storage_patiently(app, stop_signal):
        return
    try:
        wakeup: WakeupListener | None = WakeupListener(app.config.home)
    except (OSError, QueuectlError) as exc:
        logging.getLogger("queuectl.worker").warning(
            "no wake-up socket (%s); new jobs are noticed by polling only", exc)
        wakeup = None
    if wakeup is not None:
        app.ledger.on_release = wakeup.poke_others
    w = Worker(
        ledger=app.ledger, executor=app.executor(), policy=app.backoff_policy(),
        plugins=app.plugins, settings_loader=app.settings,
        log_root=app.config.home / "logs" / "jobs", stop=stop_signal, parent_pid=parent_pid,
        wakeup=wakeup, queues=queues, policy_resolver=app.backoff_policy,
        policy_label=app.backoff_policy_label,
        held_dir=held_dir(app.config.home),
    )
    if app.config.file is not None:  # the YAML file's schedules, synced at start
        w.firer.declared = app.config.file.schedules
    try:
        w.run()
    except StoreDamagedError as exc:
        # Every worker would fail alike: say why, and let the supervisor stop
        # the group rather than restart this one in a loop.
        logging.getLogger("queuectl.worker").error("worker stopped: %s", exc)
        sys.exit(STORE_DAMAGED_EXIT)
    finally:
        if wakeup is not None:
            wakeup.close()
