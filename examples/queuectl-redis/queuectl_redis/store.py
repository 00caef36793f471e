"""The store: each job one JSON value, its attempts a list, and two sorted
sets for order. Every change the core decides is made in a MULTI/EXEC
transaction guarded by WATCH on the keys it read (optimistic
compare-and-set): if another client changed them first, it reads again and
decides again. Claims are the seam's default (``due``, then ``apply``).

Keys, all under ``PREFIX:``: ``job:ID`` ([enqueue number, job]),
``hist:ID`` (list of [claim token, attempt]), ``order`` (every id, by
enqueue number), ``ready`` (pending and failed ids, by enqueue number),
``seq``, ``settings``, ``paused``, ``workers``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from pydantic import BaseModel, ConfigDict, Field

from queuectl_core.errors import DuplicateJobError, TransientStorageError
from queuectl_core.models import (
    CLAIMABLE_STATES,
    Attempt,
    Change,
    Job,
    JobState,
    WorkerInfo,
    record_from_dict,
)
from queuectl_core.registry import PluginContext
from queuectl_core.storage import Storage, claim_order

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
    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        ids = [job.id for job, _ in records]
        if len(set(ids)) < len(ids):
            raise DuplicateJobError(next(i for n, i in enumerate(ids) if i in ids[:n]))
        first = int(self.r.incrby(self._k("seq"), len(ids))) - len(ids) + 1
        keys = [self._k("job", i) for i in ids]
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    for job_id, key in zip(ids, keys, strict=True):
                        if pipe.exists(key):
                            raise DuplicateJobError(job_id)
                    pipe.multi()
                    for seq, (job, history) in enumerate(records, first):
                        self._write(pipe, seq, job)
                        pipe.zadd(self._k("order"), {job.id: seq})
                        pipe.delete(self._k("hist", job.id))
                        if history:
                            pipe.rpush(self._k("hist", job.id), *[
                                json.dumps([f"imported-{a.number}", a.as_dict()])
                                for a in history])
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def _write(self, pipe: Any, seq: int, job: Job) -> None:
        pipe.set(self._k("job", job.id), _dump(seq, job))
        if job.state in CLAIMABLE_STATES:
            pipe.zadd(self._k("ready"), {job.id: seq})
        else:
            pipe.zrem(self._k("ready"), job.id)

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

    @transient
    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        paused = self.r.smembers(self._k("paused"))
        ready = [j for j in self._jobs(self.r.zrange(self._k("ready"), 0, -1))
                 if j.state in CLAIMABLE_STATES and j.run_at <= now and j.queue not in paused
                 and (queues is None or j.queue in queues)]
        ready.sort(key=claim_order)  # stable: ties stay in enqueue order
        return ready[:limit]

    @transient
    def apply(self, changes: Sequence[Change]) -> list[Job | None]:
        ids = list(dict.fromkeys(c.job_id for c in changes))
        keys = [self._k(kind, i) for i in ids for kind in ("job", "hist")]
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    # Read (immediately, while watching), decide, then write all or nothing.
                    jobs = {i: _load(pipe.get(self._k("job", i))) for i in ids}
                    hists = {i: _history(pipe.lrange(self._k("hist", i), 0, -1)) for i in ids}
                    done = [self._decide(c, jobs, hists) for c in changes]
                    pipe.multi()
                    for i in {c.job_id for c, job in zip(changes, done, strict=True) if job}:
                        self._store(pipe, i, jobs[i], hists[i])
                    pipe.execute()
                    return done
                except redis.WatchError:
                    continue  # another client was first: read and decide again

    @staticmethod
    def _decide(change: Change, jobs: dict[str, tuple[int, Job] | None],
                hists: dict[str, History]) -> Job | None:
        found = jobs[change.job_id]
        if found is None or not change.applies_to(found[1]):
            return None
        seq, job = found
        if change.delete:
            jobs[change.job_id] = None
            return job
        job = change.applied(job)
        jobs[change.job_id] = (seq, job)
        step, history = change.attempt, hists[change.job_id]
        if step is not None and step.open is not None:
            history.append((step.token, step.open))
        elif step is not None:
            history[:] = [(t, a.replace(**step.fields) if t == step.token else a)
                          for t, a in history if not (step.drop and t == step.token)]
        return job

    def _store(self, pipe: Any, job_id: str, found: tuple[int, Job] | None,
               history: History) -> None:
        hist_key = self._k("hist", job_id)
        pipe.delete(hist_key)
        if found is None:
            pipe.delete(self._k("job", job_id))
            pipe.zrem(self._k("order"), job_id)
            pipe.zrem(self._k("ready"), job_id)
            return
        self._write(pipe, *found)
        if history:
            pipe.rpush(hist_key, *[json.dumps([t, a.as_dict()]) for t, a in history])

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
