"""The job state machine (``queuectl_core.transitions``), checked
exhaustively: for every state, with and without a cancel request, at the
retry boundary (``attempts`` at and just past ``max_retries``), charged or
not, and for success, failure with a retry time and failure without one,
what each decision sets (state, attempts, the attempt's outcome, run_at,
last_error), what it expects the job to still look like (the FENCE fields
as read), and which inputs it refuses. Rules that hold for every input are
checked with hypothesis."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectl_core import transitions as rules
from queuectl_core.builtin import ConstantBackoff, ExponentialBackoff, LinearBackoff
from queuectl_core.errors import InvalidStateError
from queuectl_core.models import (
    CLAIMABLE_STATES,
    FINISHED_STATES,
    Attempt,
    Change,
    Claim,
    ExecResult,
    Job,
    JobState,
    Outcome,
)
from queuectl_core.retry import BackoffPolicy, next_run_at
from queuectl_core.settings import Settings
from queuectl_core.transitions import (
    CANCELLED_ERROR,
    FENCE,
    INTERRUPTED_ATTEMPT_ERROR,
    LOST_ATTEMPT_ERROR,
)

T0 = 1_800_000_000_000
NOW = T0 + 60_000
LEASE = 15_000
TOKEN = "token-1"
WORKER = "host:42:abc"

OK = ExecResult(exit_code=0, stdout_tail="out", stderr_tail="")
BOOM = ExecResult(exit_code=3, error="boom", stdout_tail="", stderr_tail="err")
KILLED = ExecResult(exit_code=None, signal=9, error="killed by signal 9")
#: The results a finished attempt can have: success, and failure with and
#: without a retry time.
RESULTS = {"success": (OK, None), "failure, retry": (BOOM, NOW + 4000),
           "failure, no retry": (BOOM, None)}
#: (attempts, max_retries) around the retry boundary: the last attempt
#: allowed, and one past it; plus a first attempt with retries left.
BOUNDARY = [(1, 3), (3, 3), (4, 3), (1, 0), (2, 1)]


def make_job(state: JobState, *, attempts: int = 1, max_retries: int = 3,
             cancel: bool = False, token: str | None = TOKEN, **extra: Any) -> Job:
    """A job as a store would hold it in ``state``."""
    processing = state is JobState.PROCESSING
    fields: dict[str, Any] = {
        "id": "j1", "command": "true", "state": state, "attempts": attempts,
        "max_retries": max_retries, "priority": 0, "run_at": T0, "created_at": T0,
        "updated_at": T0 + 10, "last_error": None if state is JobState.PENDING else "before",
        "exit_code": None if processing else 1,
        "started_at": T0 + 5 if attempts else None,
        "finished_at": T0 + 8 if state in FINISHED_STATES else None,
        "worker_id": WORKER if processing else None,
        "lease_expires_at": T0 + 5 + LEASE if processing else None,
        "claim_token": token if processing else None,
        "cancel_requested_at": T0 + 7 if cancel else None,
    }
    fields.update(extra)
    return Job(**fields)


def claim_of(job: Job) -> Claim:
    assert job.claim_token is not None
    return Claim(job=job, token=job.claim_token, worker_id=WORKER, attempt=job.attempts,
                 lease_expires_at=job.lease_expires_at or NOW)


def expects_fence(change: Change, job: Job, *extra: str, held_by: str | None = None) -> None:
    """The change applies only while every FENCE field (and ``extra``) is as
    read, and to the job it was decided for. A change made for a claim
    (``held_by``: its token) expects the job held by that claim."""
    assert change.job_id == job.id
    want = {key: getattr(job, key) for key in (*FENCE, *extra)}
    if held_by is not None:
        want.update(state=JobState.PROCESSING, claim_token=held_by)
    assert dict(change.expect) == want
    if held_by is None or rules.holds(job, held_by):
        assert change.applies_to(job)


def test_the_fence_is_the_fields_that_place_a_job_in_the_state_machine() -> None:
    assert FENCE == ("state", "claim_token", "attempts", "cancel_requested_at", "dependents")
    job = make_job(JobState.PROCESSING, cancel=True)
    assert rules.fence(job) == {"state": JobState.PROCESSING, "claim_token": TOKEN,
                                "attempts": 1, "cancel_requested_at": T0 + 7, "dependents": 0}
    assert rules.fence(job, "lease_expires_at")["lease_expires_at"] == T0 + 5 + LEASE
    pending = make_job(JobState.PENDING, attempts=0)
    assert rules.held_fence(pending, "mine") == {
        "state": JobState.PROCESSING, "claim_token": "mine", "attempts": 0,
        "cancel_requested_at": None, "dependents": 0,
    }, "held by that claim, whatever the snapshot says"


# ------------------------------------------------------------------ the one rule

@pytest.mark.parametrize(("attempts", "max_retries", "dead"), [
    (0, 0, False), (1, 0, True), (1, 3, False), (3, 3, False), (4, 3, True), (5, 3, True)])
def test_a_job_is_dead_once_attempts_exceed_max_retries(attempts: int, max_retries: int,
                                                        dead: bool) -> None:
    assert rules.exhausted(attempts, max_retries) is dead


@given(attempts=st.integers(0, 10_001), max_retries=st.integers(0, 10_000))
def test_a_job_makes_max_retries_plus_one_attempts(attempts: int, max_retries: int) -> None:
    assert rules.exhausted(attempts, max_retries) is (attempts >= max_retries + 1)


POLICIES: list[BackoffPolicy] = [ExponentialBackoff(), LinearBackoff(), ConstantBackoff()]


@given(attempts=st.integers(0, 50), max_retries=st.integers(0, 40),
       policy=st.sampled_from(POLICIES),
       base=st.floats(1.0, 1000.0), max_delay=st.floats(0.0, 1e6), jitter=st.floats(0.0, 1.0),
       rand=st.floats(0.0, 1.0))
def test_next_run_at_is_none_exactly_when_the_job_is_exhausted(
        attempts: int, max_retries: int, policy: BackoffPolicy, base: float, max_delay: float,
        jitter: float, rand: float) -> None:
    settings = Settings(backoff_base=base, max_delay=max_delay, jitter=jitter)
    when = next_run_at(attempts=attempts, max_retries=max_retries, now=NOW, policy=policy,
                       settings=settings, rand=lambda: rand)
    assert (when is None) is rules.exhausted(attempts, max_retries)
    assert when is None or when >= NOW, "a retry is never scheduled in the past"


# ------------------------------------------------------------------ holds

@pytest.mark.parametrize("state", list(JobState))
def test_only_a_processing_job_with_the_claims_token_is_held_by_it(state: JobState) -> None:
    job = make_job(state)
    assert rules.holds(job, TOKEN) is (state is JobState.PROCESSING)
    assert not rules.holds(job, "another token")
    assert not rules.holds(None, TOKEN)


# ------------------------------------------------------------------ claimed

@pytest.mark.parametrize(("state", "attempts", "cancel"),
                         [(s, a, False) for s in CLAIMABLE_STATES for a in (0, 1, 3)
                          if (s is JobState.PENDING) == (a == 0)])
def test_a_claim_counts_an_attempt_and_opens_its_record(state: JobState, attempts: int,
                                                        cancel: bool) -> None:
    job = make_job(state, attempts=attempts, cancel=cancel)
    change = rules.claimed(job, worker_id="w2", token="new", now=NOW, lease_ms=LEASE,
                           number=7)
    # updated_at too: the history ``number`` counted may have grown meanwhile
    # (a claim and a forced stop) with every other fenced field as read.
    expects_fence(change, job, "updated_at")
    assert dict(change.fields) == {
        "state": JobState.PROCESSING, "attempts": attempts + 1, "worker_id": "w2",
        "claim_token": "new", "lease_expires_at": NOW + LEASE, "started_at": NOW,
        "finished_at": None, "updated_at": NOW}
    assert change.attempt is not None and change.attempt.token == "new"
    assert change.attempt.open == Attempt(job_id="j1", number=7, worker_id="w2",
                                          started_at=NOW)
    assert not change.attempt.drop and not change.delete
    claimed = change.applied(job)
    assert rules.holds(claimed, "new")
    assert claimed.run_at == job.run_at and claimed.last_error == job.last_error


# ------------------------------------------------------------------ renewed

@pytest.mark.parametrize("cancel", [False, True])
def test_a_renewal_only_moves_the_lease(cancel: bool) -> None:
    job = make_job(JobState.PROCESSING, cancel=cancel)
    change = rules.renewed(job, TOKEN, now=NOW, lease_ms=LEASE)
    expects_fence(change, job, held_by=TOKEN)
    assert dict(change.fields) == {"lease_expires_at": NOW + LEASE}
    assert change.attempt is None


# ------------------------------------------------------------------ finished

#: (cancel requested, result) -> (state, attempt outcome)
FINISHED_TABLE = {
    (False, "success"): (JobState.COMPLETED, "completed"),
    (True, "success"): (JobState.COMPLETED, "completed"),
    (False, "failure, retry"): (JobState.FAILED, "failed"),
    (True, "failure, retry"): (JobState.CANCELLED, "cancelled"),
    (False, "failure, no retry"): (JobState.DEAD, "failed"),
    (True, "failure, no retry"): (JobState.CANCELLED, "cancelled"),
}


@pytest.mark.parametrize(("cancel", "result", "boundary"), [
    (c, r, b) for (c, r), b in itertools.product(FINISHED_TABLE, BOUNDARY)])
def test_a_finished_attempt_is_recorded_as_the_table_says(
        cancel: bool, result: str, boundary: tuple[int, int]) -> None:
    attempts, max_retries = boundary
    job = make_job(JobState.PROCESSING, attempts=attempts, max_retries=max_retries,
                   cancel=cancel)
    exec_result, retry_at = RESULTS[result]
    change = rules.finished(job, Outcome(claim_of(job), exec_result, retry_at), NOW)
    state, outcome = FINISHED_TABLE[cancel, result]
    expects_fence(change, job, held_by=TOKEN)
    expected: dict[str, Any] = {
        "state": state, "last_error": None if exec_result.ok else "boom",
        "exit_code": exec_result.exit_code, "finished_at": NOW, "updated_at": NOW,
        "lease_expires_at": None, "claim_token": None}
    if state is JobState.FAILED:
        expected["run_at"] = retry_at
    assert dict(change.fields) == expected, "attempts unchanged: the claim counted it"
    assert change.attempt is not None and change.attempt.token == TOKEN
    assert dict(change.attempt.fields) == {
        "finished_at": NOW, "outcome": outcome, "exit_code": exec_result.exit_code,
        "signal": None, "error": exec_result.error, "stdout_tail": exec_result.stdout_tail,
        "stderr_tail": exec_result.stderr_tail}
    assert change.attempt.open is None and not change.attempt.drop


def test_a_finished_attempt_keeps_when_its_command_really_started_and_ended() -> None:
    job = make_job(JobState.PROCESSING)
    change = rules.finished(job, Outcome(claim_of(job), KILLED, NOW + 1000,
                                         finished_at=NOW - 20, started_at=NOW - 50), NOW)
    assert change.fields["finished_at"] == change.fields["updated_at"] == NOW - 20
    assert change.fields["started_at"] == NOW - 50
    assert change.fields["state"] is JobState.FAILED, "a signal is a failure"
    assert change.attempt is not None
    assert (change.attempt.fields["finished_at"], change.attempt.fields["started_at"],
            change.attempt.fields["signal"]) == (NOW - 20, NOW - 50, 9)


@pytest.mark.parametrize("snapshot", ["another claim's", "none"])
def test_a_result_and_a_renewal_are_fenced_on_the_claims_own_token(snapshot: str) -> None:
    """Decided from a job read afresh (recovery of a dead worker's results),
    they still apply only while the claim itself holds the job: never to a
    job another worker claimed meanwhile."""
    mine = make_job(JobState.PROCESSING)
    read = mine.replace(claim_token="theirs" if snapshot != "none" else None)
    claim = claim_of(mine)
    for change in (rules.finished(read, Outcome(claim, OK), NOW),
                   rules.renewed(read, claim.token, now=NOW, lease_ms=LEASE)):
        assert change.expect["claim_token"] == TOKEN
        assert change.applies_to(mine)
        assert not change.applies_to(read)
        assert not change.applies_to(mine.replace(claim_token="theirs"))
        assert not change.applies_to(mine.replace(state=JobState.FAILED, claim_token=None))


# ------------------------------------------------------------------ taken back

#: (charge, cancel requested) -> attempt outcome
TAKEN_BACK_OUTCOME = {(True, False): "lost", (False, False): "interrupted",
                      (True, True): "cancelled", (False, True): "cancelled"}


@pytest.mark.parametrize(("charge", "cancel", "boundary"), [
    (ch, c, b) for (ch, c), b in itertools.product(TAKEN_BACK_OUTCOME, BOUNDARY)])
def test_a_job_taken_back_is_charged_or_not_as_the_table_says(
        charge: bool, cancel: bool, boundary: tuple[int, int]) -> None:
    attempts, max_retries = boundary
    job = make_job(JobState.PROCESSING, attempts=attempts, max_retries=max_retries,
                   cancel=cancel)
    change = rules.taken_back(job, now=NOW, charge=charge)
    expects_fence(change, job, "lease_expires_at")
    left = attempts if charge else attempts - 1
    if cancel:
        state = JobState.CANCELLED
    elif charge:
        state = JobState.DEAD if attempts > max_retries else JobState.FAILED
    else:
        state = JobState.PENDING if left == 0 else JobState.FAILED
    text = (LOST_ATTEMPT_ERROR if charge else INTERRUPTED_ATTEMPT_ERROR).format(worker=WORKER)
    assert dict(change.fields) == {
        "state": state, "attempts": left, "run_at": NOW, "last_error": text,
        "exit_code": None, "finished_at": NOW, "updated_at": NOW, "lease_expires_at": None,
        "claim_token": None}
    assert change.attempt is not None and change.attempt.token == TOKEN
    assert dict(change.attempt.fields) == {"finished_at": NOW,
                                           "outcome": TAKEN_BACK_OUTCOME[charge, cancel],
                                           "error": text}


def test_a_job_taken_back_records_the_error_given_instead() -> None:
    job = make_job(JobState.PROCESSING)
    change = rules.taken_back(job, now=NOW, charge=True, error="moved to another queue")
    assert change.fields["last_error"] == "moved to another queue"
    assert change.attempt is not None
    assert change.attempt.fields["error"] == "moved to another queue"


def test_the_lost_and_interrupted_texts_name_the_worker() -> None:
    assert WORKER in LOST_ATTEMPT_ERROR.format(worker=WORKER)
    assert WORKER in INTERRUPTED_ATTEMPT_ERROR.format(worker=WORKER)
    assert "does not count" in INTERRUPTED_ATTEMPT_ERROR


# ------------------------------------------------------------------ released

@pytest.mark.parametrize(("cancel", "attempts", "before"), [
    (c, a, b) for c in (False, True) for a in (1, 2, 4) for b in (False, True)
    if not (a > 1 and not b)])
def test_a_claim_given_back_unstarted_is_as_if_never_made(cancel: bool, attempts: int,
                                                          before: bool) -> None:
    job = make_job(JobState.PROCESSING, attempts=attempts, max_retries=3, cancel=cancel)
    previous = Attempt(job_id="j1", number=attempts - 1, worker_id="earlier",
                       started_at=T0 - 100, finished_at=T0 - 50, outcome="failed") \
        if before else None
    change = rules.released(job, previous, now=NOW)
    expects_fence(change, job)
    left = attempts - 1
    expected: dict[str, Any] = {
        "state": JobState.PENDING if left == 0 else JobState.FAILED, "attempts": left,
        "updated_at": NOW, "lease_expires_at": None, "claim_token": None,
        "worker_id": "earlier" if previous else None,
        "started_at": T0 - 100 if previous and left else None,
        "finished_at": T0 - 50 if previous and left else None}
    if cancel:
        expected.update(state=JobState.CANCELLED, finished_at=NOW, last_error=CANCELLED_ERROR)
    assert dict(change.fields) == expected
    assert "run_at" not in change.fields, "it keeps its place in the queue"
    assert change.attempt is not None and change.attempt.token == TOKEN
    assert change.attempt.drop and not change.attempt.fields


@pytest.mark.parametrize("state", [s for s in JobState if s is not JobState.PROCESSING])
def test_only_a_processing_job_can_be_taken_back_or_given_back(state: JobState) -> None:
    job = make_job(state)
    with pytest.raises(AssertionError):
        rules.taken_back(job, now=NOW, charge=True)
    with pytest.raises(AssertionError):
        rules.released(job, None, now=NOW)


def test_a_processing_job_without_a_token_cannot_be_taken_back() -> None:
    job = make_job(JobState.PROCESSING, token=None)
    with pytest.raises(AssertionError):
        rules.taken_back(job, now=NOW, charge=False)
    with pytest.raises(AssertionError):
        rules.released(job, None, now=NOW)


# ------------------------------------------------------------------ cancelled

@pytest.mark.parametrize(("state", "cancel"), list(itertools.product(JobState, (False, True))))
def test_cancel_decides_by_state(state: JobState, cancel: bool) -> None:
    job = make_job(state, attempts=0 if state is JobState.PENDING else 1, cancel=cancel)
    if state in FINISHED_STATES:
        with pytest.raises(InvalidStateError, match=f"is {state.value} already"):
            rules.cancelled(job, now=NOW)
        return
    change = rules.cancelled(job, now=NOW)
    if state is JobState.PROCESSING:
        if cancel:
            assert change is None, "asking again changes nothing"
            return
        assert change is not None
        expects_fence(change, job)
        assert dict(change.fields) == {"cancel_requested_at": NOW, "updated_at": NOW}, (
            "a running job is only asked to stop")
        return
    assert change is not None
    expects_fence(change, job)
    assert dict(change.fields) == {"state": JobState.CANCELLED, "finished_at": NOW,
                                   "updated_at": NOW, "last_error": CANCELLED_ERROR,
                                   "cancel_requested_at": NOW}
    assert change.attempt is None


# ------------------------------------------------------------------ revived, purged

@pytest.mark.parametrize(("state", "boundary"), list(itertools.product(JobState, BOUNDARY)))
def test_only_a_dead_job_is_revived_with_attempts_reset(state: JobState,
                                                        boundary: tuple[int, int]) -> None:
    attempts, max_retries = boundary
    job = make_job(state, attempts=attempts, max_retries=max_retries)
    if state is not JobState.DEAD:
        with pytest.raises(InvalidStateError, match="only jobs in the DLQ"):
            rules.revived(job, now=NOW)
        return
    change = rules.revived(job, now=NOW)
    expects_fence(change, job)
    assert dict(change.fields) == {"state": JobState.PENDING, "attempts": 0, "run_at": NOW,
                                   "updated_at": NOW, "started_at": None, "finished_at": None,
                                   "exit_code": None}
    revived = change.applied(job)
    assert revived.max_retries == max_retries, "its own max_retries is kept"
    assert revived.last_error == job.last_error, "why it died stays visible"


@pytest.mark.parametrize("state", list(JobState))
def test_only_a_finished_job_is_purged(state: JobState) -> None:
    job = make_job(state)
    if state not in FINISHED_STATES:
        with pytest.raises(InvalidStateError, match="can be purged"):
            rules.purged(job)
        return
    change = rules.purged(job)
    expects_fence(change, job)
    assert change.delete and not change.fields and change.attempt is None


def test_a_job_without_finished_at_counts_as_finished_when_last_updated() -> None:
    job = make_job(JobState.COMPLETED)
    assert rules.finished_at(job) == T0 + 8
    assert rules.finished_at(job.replace(finished_at=None)) == T0 + 10


# ------------------------------------------------------------------ arrived (import)

def test_an_imported_job_that_was_not_running_arrives_as_it_was() -> None:
    job = make_job(JobState.FAILED, attempts=2)
    history = [Attempt(job_id="j1", number=1, worker_id="w", started_at=T0,
                       finished_at=T0 + 1, outcome="failed"),
               Attempt(job_id="j1", number=2, worker_id="w", started_at=T0 + 2,
                       outcome="running")]
    got, attempts = rules.arrived(job, history, now=NOW, error="moved")
    assert got == job
    assert attempts[0] == history[0]
    assert attempts[1] == history[1].replace(finished_at=NOW, outcome="lost", error="moved"), (
        "no attempt is left running")


@pytest.mark.parametrize(("cancel", "boundary", "token"),
                         list(itertools.product((False, True), BOUNDARY, (TOKEN, None))))
def test_an_imported_running_job_lost_its_attempt_as_after_a_crash(
        cancel: bool, boundary: tuple[int, int], token: str | None) -> None:
    attempts, max_retries = boundary
    job = make_job(JobState.PROCESSING, attempts=attempts, max_retries=max_retries,
                   cancel=cancel, token=token)
    history = [Attempt(job_id="j1", number=attempts, worker_id=WORKER, started_at=T0 + 5)]
    got, after = rules.arrived(job, history, now=NOW, error="moved")
    if cancel:
        state, outcome = JobState.CANCELLED, "cancelled"
    else:
        state = JobState.DEAD if attempts > max_retries else JobState.FAILED
        outcome = "lost"
    assert (got.state, got.attempts, got.run_at, got.last_error, got.claim_token,
            got.lease_expires_at) == (state, attempts, NOW, "moved", None, None)
    assert after == [history[0].replace(finished_at=NOW, outcome=outcome, error="moved")]


# ------------------------------------------------------------------ rules for all inputs

states = st.sampled_from(list(JobState))
times = st.integers(T0, T0 + 10**9)


@st.composite
def jobs(draw: st.DrawFn, state: st.SearchStrategy[JobState] = states) -> Job:
    """Any job a store could hold, in ``state``."""
    chosen = draw(state)
    max_retries = draw(st.integers(0, 5))
    least = 0 if chosen is JobState.PENDING else 1
    most = 0 if chosen is JobState.PENDING else max_retries + 2
    cancel = draw(st.booleans()) if chosen in (JobState.PROCESSING, JobState.COMPLETED,
                                               JobState.CANCELLED) else False
    if chosen is JobState.CANCELLED:
        cancel = True
    return make_job(chosen, attempts=draw(st.integers(least, most)), max_retries=max_retries,
                    cancel=cancel, token=draw(st.text(min_size=1, max_size=8)),
                    run_at=draw(times), updated_at=draw(times))


processing_jobs = jobs(st.just(JobState.PROCESSING))
results = st.sampled_from([OK, BOOM, KILLED, ExecResult(exit_code=0, signal=15),
                           ExecResult(exit_code=1)])
retry_times = st.none() | times


@given(job=processing_jobs, now=times)
def test_a_charged_loss_never_lowers_attempts(job: Job, now: int) -> None:
    change = rules.taken_back(job, now=now, charge=True)
    assert change.fields["attempts"] == job.attempts
    assert change.applied(job).attempts >= job.attempts


@given(job=processing_jobs, now=times)
def test_a_forced_stop_never_makes_a_job_dead_and_never_counts(job: Job, now: int) -> None:
    change = rules.taken_back(job, now=now, charge=False)
    assert change.fields["state"] is not JobState.DEAD
    assert change.fields["attempts"] == job.attempts - 1
    assert change.attempt is not None
    assert change.attempt.fields["outcome"] in ("interrupted", "cancelled")


@given(job=processing_jobs, now=times, charge=st.booleans())
def test_a_job_taken_back_is_dead_only_if_charged_and_exhausted(job: Job, now: int,
                                                                 charge: bool) -> None:
    state = rules.taken_back(job, now=now, charge=charge).fields["state"]
    assert (state is JobState.DEAD) is (
        charge and job.cancel_requested_at is None
        and rules.exhausted(job.attempts, job.max_retries))
    assert state in (JobState.PENDING, JobState.FAILED, JobState.DEAD, JobState.CANCELLED)


@given(job=processing_jobs, now=times, result=results, retry_at=retry_times,
       charge=st.booleans(), before=st.booleans())
def test_cancellation_wins_over_failure_and_loss_but_never_over_success(
        job: Job, now: int, result: ExecResult, retry_at: int | None, charge: bool,
        before: bool) -> None:
    cancel = job.cancel_requested_at is not None
    previous = (Attempt(job_id=job.id, number=1, worker_id="w0", started_at=T0,
                        finished_at=T0 + 1, outcome="failed") if before else None)
    recorded = rules.finished(job, Outcome(claim_of(job), result, retry_at), now)
    if result.ok:
        assert recorded.fields["state"] is JobState.COMPLETED
    else:
        assert (recorded.fields["state"] is JobState.CANCELLED) is cancel
    for change in (rules.taken_back(job, now=now, charge=charge),
                   rules.released(job, previous, now=now)):
        assert (change.fields["state"] is JobState.CANCELLED) is cancel


@given(job=processing_jobs, now=times, result=results, retry_at=retry_times)
def test_a_failure_is_retried_exactly_when_given_a_retry_time(
        job: Job, now: int, result: ExecResult, retry_at: int | None) -> None:
    change = rules.finished(job, Outcome(claim_of(job), result, retry_at), now)
    if result.ok or job.cancel_requested_at is not None:
        assert "run_at" not in change.fields
        return
    assert change.fields["state"] is (JobState.FAILED if retry_at is not None
                                      else JobState.DEAD)
    assert change.fields.get("run_at") == retry_at
    assert change.fields["last_error"] == result.error


@given(job=processing_jobs, now=times, result=results, retry_at=retry_times,
       charge=st.booleans())
def test_every_end_of_a_claim_frees_the_job_and_closes_its_attempt(
        job: Job, now: int, result: ExecResult, retry_at: int | None, charge: bool) -> None:
    for change in (rules.finished(job, Outcome(claim_of(job), result, retry_at), now),
                   rules.taken_back(job, now=now, charge=charge),
                   rules.released(job, None, now=now)):
        after = change.applied(job)
        assert after.state is not JobState.PROCESSING
        assert after.claim_token is None and after.lease_expires_at is None
        assert change.attempt is not None and change.attempt.token == job.claim_token
        assert change.attempt.drop or change.attempt.fields["outcome"] != "running"


#: A change the state machine decided, the fields it expects besides FENCE,
#: and the token of the claim it was made for (None: not made for a claim).
Decision = tuple[Change, tuple[str, ...], str | None]


def decisions(job: Job, now: int) -> list[Decision]:
    """Every change the state machine decides for ``job``."""
    made: list[Decision] = []
    if job.state in CLAIMABLE_STATES:
        made.append((rules.claimed(job, worker_id="w", token="t", now=now, lease_ms=LEASE,
                                   number=1), ("updated_at",), None))
    if job.state is JobState.PROCESSING:
        claim = claim_of(job)
        token = claim.token
        made += [(rules.renewed(job, token, now=now, lease_ms=LEASE), (), token),
                 (rules.finished(job, Outcome(claim, OK), now), (), token),
                 (rules.finished(job, Outcome(claim, BOOM, now + 1), now), (), token),
                 (rules.finished(job, Outcome(claim, BOOM), now), (), token),
                 (rules.taken_back(job, now=now, charge=True), ("lease_expires_at",), None),
                 (rules.taken_back(job, now=now, charge=False), ("lease_expires_at",), None),
                 (rules.released(job, None, now=now), (), None)]
    if job.state not in FINISHED_STATES:
        cancel = rules.cancelled(job, now=now)
        if cancel is not None:
            made.append((cancel, (), None))
    if job.state is JobState.DEAD:
        made.append((rules.revived(job, now=now), (), None))
    if job.state in FINISHED_STATES:
        made.append((rules.purged(job), (), None))
    return made


def changed(job: Job, key: str) -> Job:
    """``job`` with another value of ``key``, as another process may have
    left it."""
    value = getattr(job, key)
    if key == "state":
        other: Any = next(s for s in JobState if s is not value)
    elif key == "claim_token":
        other = "another" if value is None else None
    elif value is None:
        other = T0
    else:
        other = value + 1
    return job.replace(**{key: other})


@given(job=jobs(), now=times)
def test_every_change_expects_the_fence_fields_as_read(job: Job, now: int) -> None:
    for change, extra, token in decisions(job, now):
        expects_fence(change, job, *extra, held_by=token)
        for key in (*FENCE, *extra):
            assert not change.applies_to(changed(job, key)), (
                f"a change of {key} meanwhile must fence it out")
        assert not change.applies_to(None)


@given(job=jobs(), now=times)
def test_every_change_sets_only_job_fields(job: Job, now: int) -> None:
    for change, _, _ in decisions(job, now):
        assert set(change.fields) <= set(Job.field_names())
        change.applied(job)  # a valid Job results
