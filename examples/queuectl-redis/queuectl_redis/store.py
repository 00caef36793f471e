"""The store: each job one JSON value, its attempts a list, and two sorted
sets for order. Every write is one MULTI/EXEC transaction guarded by WATCH
on the keys it read (optimistic compare-and-set): if another client changed
them first, it reads again and decides again. Claims are the seam's default
(``due``, then ``apply``); ``apply`` makes a keyed job ``processing`` only
while its key has a free slot (counted in a watched set).

Keys, all under ``PREFIX:``: ``job:ID`` ([enqueue number, job]),
``hist:ID`` (list of [claim token, attempt]), ``order`` (every id, by
enqueue number), ``ready`` (pending and failed ids, by enqueue number),
``children:ID`` (the jobs that run after ID, by enqueue number),
``unique:KEY`` (the unfinished job holding a unique key), ``running:KEY``
(the processing jobs with a concurrency key), ``seq``, ``settings``,
``paused``, ``workers``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from pydantic import BaseModel, ConfigDict, Field

from queuectl_core.errors import (
    ChangedMeanwhile,
    DuplicateJobError,
    TransientStorageError,
    UniqueKeyError,
)
from queuectl_core.models import (
    CLAIMABLE_STATES,
    UNFINISHED_STATES,
    Attempt,
    Change,
    Job,
    JobState,
    WorkerInfo,
    record_from_dict,
)
from queuectl_core.registry import PluginContext
from queuectl_core.storage import LIMITS_SETTING, Storage, claim_order, concurrency_limit

F = TypeVar("F", bound=Callable[..., Any])


class RedisOptions(BaseModel):
    """``backends: {redis: {...}}`` in queuectl.yaml."""

    model_config = ConfigDict(extra="forbid")
    #: Where the server is (redis-py's URL form, password included if any).
    url: str = "redis://127.0.0.1:6379/0"
    #: Every key of this queue starts with ``PREFIX:``; queues sharing a
    #: server use different prefixes.
    prefix: str = Field(default="queuectl", pattern=r"^[A-Za-z0-9_.-]{1,64}$")


History = list[tuple[str, Attempt]]
Found = tuple[int, Job] | None  # (enqueue number, job), or not stored


def transient(method: F) -> F:
    """A server that cannot be reached is a transient error: workers wait."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise TransientStorageError(f"Redis is unreachable: {exc}") from exc
    return wrapper  # type: ignore[return-value]


def _dump(seq: int, job: Job) -> str:
    return json.dumps([seq, job.as_dict()])


def _load(text: str | None) -> tuple[int, Job] | None:
    if text is None:
        return None
    seq, data = json.loads(text)
    return seq, record_from_dict(Job, data)


def _history(items: list[str]) -> History:
    return [(token, record_from_dict(Attempt, data)) for token, data in map(json.loads, items)]


def _held(found: Found) -> str | None:
    """The unique key the job holds (it is unfinished), if any."""
    job = found[1] if found else None
    return job.unique_key if job and job.state in UNFINISHED_STATES else None


class _Txn:
    """One write: reads (each key watched first), decisions on what was
    read, then every write in one MULTI/EXEC (:meth:`write`)."""

    def __init__(self, store: RedisStorage, pipe: Any) -> None:
        self.s, self.pipe = store, pipe
        self.before: dict[str, Found] = {}
        self.jobs: dict[str, Found] = {}
        self.hists: dict[str, History] = {}
        self.running: dict[str, int] = {}
        self.new: set[str] = set()
        self.touched: dict[str, None] = {}  # changed or created, in order

    def load(self, job_id: str) -> None:
        if job_id not in self.jobs:
            k = self.s._k
            self.pipe.watch(k("job", job_id), k("hist", job_id))
            self.before[job_id] = self.jobs[job_id] = _load(self.pipe.get(k("job", job_id)))
            self.hists[job_id] = _history(self.pipe.lrange(k("hist", job_id), 0, -1))

    def create(self, seq: int, job: Job, history: Sequence[Attempt]) -> None:
        self.before[job.id], self.jobs[job.id], self.touched[job.id] = None, (seq, job), None
        self.hists[job.id] = [(f"imported-{a.number}", a) for a in history]
        self.new.add(job.id)

    def apply(self, change: Change) -> Job | None:
        self.load(change.job_id)
        found = self.jobs[change.job_id]
        if found is None or not change.applies_to(found[1]):
            return None
        seq, job = found
        if change.delete:
            self.jobs[change.job_id], self.touched[change.job_id] = None, None
            return job
        new = change.applied(job)
        key = new.concurrency_key
        if key is not None and (new.state is JobState.PROCESSING) != (
                job.state is JobState.PROCESSING):
            count = self._running(key)
            if new.state is JobState.PROCESSING and count >= self._limit(key):
                return None  # the key has no free slot: a claim takes another job
            self.running[key] = count + (1 if new.state is JobState.PROCESSING else -1)
        self.jobs[change.job_id], self.touched[change.job_id] = (seq, new), None
        step, history = change.attempt, self.hists[change.job_id]
        if step is not None and step.open is not None:
            history.append((step.token, step.open))
        elif step is not None:
            history[:] = [(t, a.replace(**step.fields) if t == step.token else a)
                          for t, a in history if not (step.drop and t == step.token)]
        return new

    def _running(self, key: str) -> int:
        if key not in self.running:
            self.pipe.watch(self.s._k("running", key))
            self.running[key] = int(self.pipe.scard(self.s._k("running", key)))
        return self.running[key]

    def _limit(self, key: str) -> int:
        limits = self.pipe.hget(self.s._k("settings"), LIMITS_SETTING)
        return concurrency_limit(json.loads(limits) if limits else None, key)

    def check_unique(self) -> None:
        """UniqueKeyError if a job would take a key another unfinished job holds."""
        released = {_held(self.before[i]) for i in self.touched
                    if _held(self.before[i]) != _held(self.jobs[i])}
        taken: dict[str, str] = {}
        for job_id in self.touched:
            key = _held(self.jobs[job_id])
            if key is None or key == _held(self.before[job_id]):
                continue
            self.pipe.watch(self.s._k("unique", key))
            holder = taken.get(key) or self.pipe.get(self.s._k("unique", key))
            if holder is not None and holder != job_id and (key in taken or key not in released):
                raise UniqueKeyError(key, holder)
            taken[key] = job_id

    def write(self) -> None:
        """Everything changed, in one MULTI/EXEC (the caller executes it)."""
        pipe, k = self.pipe, self.s._k
        pipe.multi()
        for job_id in self.touched:  # unique keys given up, then taken
            key = _held(self.before[job_id])
            if key is not None and key != _held(self.jobs[job_id]):
                pipe.delete(k("unique", key))
        for job_id in self.touched:
            key = _held(self.jobs[job_id])
            if key is not None:
                pipe.set(k("unique", key), job_id)
            self._store(job_id, self.jobs[job_id])

    def _store(self, job_id: str, found: Found) -> None:
        pipe, k = self.pipe, self.s._k
        before = self.before[job_id]
        pipe.delete(k("hist", job_id))
        if found is None:
            assert before is not None
            job = before[1]
            pipe.delete(k("job", job_id), k("children", job_id))
            pipe.zrem(k("order"), job_id)
            pipe.zrem(k("ready"), job_id)
            for parent in job.after or ():
                pipe.zrem(k("children", parent), job_id)
            if job.concurrency_key is not None:
                pipe.srem(k("running", job.concurrency_key), job_id)
            return
        seq, job = found
        pipe.set(k("job", job_id), _dump(seq, job))
        (pipe.zadd(k("ready"), {job_id: seq}) if job.state in CLAIMABLE_STATES
         else pipe.zrem(k("ready"), job_id))
        if job.concurrency_key is not None:
            (pipe.sadd if job.state is JobState.PROCESSING else pipe.srem)(
                k("running", job.concurrency_key), job_id)
        if job_id in self.new:
            pipe.zadd(k("order"), {job_id: seq})
            for parent in job.after or ():
                pipe.zadd(k("children", parent), {job_id: seq})
        history = self.hists[job_id]
        if history:
            pipe.rpush(k("hist", job_id), *[json.dumps([t, a.as_dict()]) for t, a in history])


class RedisStorage(Storage):
    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        # Any: redis-py types each reply as a union over bytes, str and
        # awaitables; with decode_responses they are str.
        self.r: Any = redis.Redis.from_url(url, decode_responses=True)

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _jobs(self, ids: Sequence[str]) -> list[Job]:
        texts = self.r.mget([self._k("job", i) for i in ids]) if ids else []
        return [found[1] for found in map(_load, texts) if found is not None]

    @transient
    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
               changes: Sequence[Change] = ()) -> None:
        ids = [job.id for job, _ in records]
        if len(set(ids)) < len(ids):
            raise DuplicateJobError(next(i for n, i in enumerate(ids) if i in ids[:n]))
        first = int(self.r.incrby(self._k("seq"), len(ids))) - len(ids) + 1
        self._write(changes, records, first, atomic=True)

    def _write(self, changes: Sequence[Change], records: Sequence[tuple[Job, Sequence[Attempt]]]
               = (), first: int = 0, *, atomic: bool) -> list[Job | None]:
        """Make ``changes``, then store ``records`` (numbered from ``first``),
        all in one transaction; with ``atomic``, nothing unless every change
        applies (an insert's changes: ChangedMeanwhile)."""
        with self.r.pipeline() as pipe:
            while True:
                try:
                    txn = _Txn(self, pipe)
                    for job, _ in records:
                        txn.load(job.id)
                        if txn.jobs[job.id] is not None:
                            raise DuplicateJobError(job.id)
                    done = [txn.apply(change) for change in changes]
                    if atomic and None in done:
                        if records:
                            raise ChangedMeanwhile("a job to run after changed meanwhile")
                        return [None] * len(changes)
                    for seq, (job, history) in enumerate(records, first):
                        txn.create(seq, job, history)
                    txn.check_unique()
                    txn.write()
                    pipe.execute()
                    return done
                except redis.WatchError:
                    continue  # another client was first: read and decide again

    @transient
    def get(self, job_id: str) -> Job | None:
        found = _load(self.r.get(self._k("job", job_id)))
        return found[1] if found else None

    @transient
    def attempts(self, job_id: str) -> list[Attempt]:
        return [a for _, a in _history(self.r.lrange(self._k("hist", job_id), 0, -1))]

    @transient
    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        return self._list(state, limit, queue, newest_first=False)

    @transient
    def list_newest(self, state: JobState | None = None, limit: int | None = None, *,
                    queue: str | None = None) -> list[Job]:
        return self._list(state, limit, queue, newest_first=True)

    def _list(self, state: JobState | None, limit: int | None, queue: str | None, *,
              newest_first: bool) -> list[Job]:
        found: list[Job] = []
        start = 0
        read = self.r.zrevrange if newest_first else self.r.zrange
        while limit is None or len(found) < limit:
            ids = read(self._k("order"), start, start + 499)
            if not ids:
                break
            start += len(ids)
            found += [j for j in self._jobs(ids) if (state is None or j.state is state)
                      and (queue is None or j.queue == queue)]
        return found if limit is None else found[:limit]

    def _ready(self, queues: Sequence[str] | None) -> tuple[list[Job], dict[str, int]]:
        """The claimable jobs outside paused queues (of ``queues`` if given)
        whose key has a free slot, in claim order; and each key's free slots."""
        paused = self.r.smembers(self._k("paused"))
        ready = [j for j in self._jobs(self.r.zrange(self._k("ready"), 0, -1))
                 if j.state in CLAIMABLE_STATES and j.queue not in paused
                 and (queues is None or j.queue in queues)]
        keys = sorted({j.concurrency_key for j in ready if j.concurrency_key is not None})
        limits = self.get_settings().get(LIMITS_SETTING) if keys else None
        free = {key: concurrency_limit(limits, key) - self.r.scard(self._k("running", key))
                for key in keys}
        ready = [j for j in ready if j.concurrency_key is None or free[j.concurrency_key] > 0]
        ready.sort(key=claim_order)  # stable: ties stay in enqueue order
        return ready, free

    @transient
    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        ready, free = self._ready(queues)
        picked = []
        for job in ready:
            key = job.concurrency_key
            if job.run_at > now or (key is not None and free[key] <= 0):
                continue
            if key is not None:
                free[key] -= 1  # (a slot per job)
            picked.append(job)
        return picked[:limit]

    @transient
    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        return min((job.run_at for job in self._ready(queues)[0]), default=None)

    @transient
    def dependents(self, job_id: str) -> list[Job]:
        return self._jobs(self.r.zrange(self._k("children", job_id), 0, -1))

    @transient
    def apply(self, changes: Sequence[Change], *, atomic: bool = False
              ) -> list[Job | None]:
        return self._write(changes, atomic=atomic)

    @transient
    def get_settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.r.hgetall(self._k("settings")).items()}

    @transient
    def set_setting(self, key: str, value: Any) -> None:
        self.r.hset(self._k("settings"), key, json.dumps(value))

    @transient
    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        change = self.r.sadd if paused else self.r.srem
        return bool(change(self._k("paused"), queue))

    @transient
    def paused_queues(self) -> list[str]:
        return sorted(self.r.smembers(self._k("paused")))

    @transient
    def put_worker(self, worker: WorkerInfo) -> None:
        self.r.hset(self._k("workers"), worker.id, json.dumps(worker.as_dict()))

    @transient
    def remove_workers(self, worker_ids: Sequence[str]) -> None:
        if worker_ids:
            self.r.hdel(self._k("workers"), *worker_ids)

    @transient
    def list_workers(self) -> list[WorkerInfo]:
        workers = [record_from_dict(WorkerInfo, json.loads(v))
                   for v in self.r.hvals(self._k("workers"))]
        return sorted(workers, key=lambda w: (w.started_at, w.id))

    def describe(self) -> str:
        where = self.r.connection_pool.connection_kwargs
        return f"redis {where.get('host', '?')}:{where.get('port', '?')}/{where.get('db', 0)} " \
               f"prefix {self.prefix}"

    def close(self) -> None:
        self.r.close()


def open_store(options: RedisOptions | None, context: PluginContext) -> RedisStorage:
    """The factory: ``options`` as validated from the YAML (None: defaults)."""
    options = options or RedisOptions()
    return RedisStorage(options.url, options.prefix)
