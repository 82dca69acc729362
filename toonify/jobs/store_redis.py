"""The job store a fleet shares: one Redis (``TOONIFY_QUEUE_URL``), used through redis-py.

Keys, under ``toonify:``::

    job:{id}      hash: status, times, the upload (until the job ends), round, level, error, claim
    outcome:{id}  hash: outcome (JSON), result (the image); deleted at the job's expiry
    queued        sorted set: id by round (the line's order; the position is its rank)
    arrived       sorted set: queued id by submission time (the oldest waiting, for metrics)
    client:{c}    sorted set: a client's waiting (queued or running) ids by round
    running       sorted set: id by the time its claim lapses
    expiring      sorted set: id of a kept answer by the time it is deleted
    finished      sorted set: id by finish time, the last hour (the fleet's drain rate)
    held_bytes    the photos' and the kept answers' bytes (TOONIFY_QUEUE_MAX_BYTES)
    answers_kept  answers stored, ever: against the jobs answered, none twice (the load test's)

Every change of state is one Lua script, so it is atomic whatever the number of instances. A
claim is a random token written into the job; while it runs, the instance renews it; a job whose
claim lapsed (its instance died, or stopped answering) goes back to the queue at its old place,
and an answer is kept only from the claim that still holds the job: at least once run, once
answered. The scripts name keys they compute, so this is for one Redis (or a primary with
replicas), not Redis Cluster.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import redis.asyncio as redis
from redis.exceptions import OutOfMemoryError, RedisError

from ..errors import QueueFull, TooManyJobs, Unavailable
from ..schema import ToonifyOptions
from .model import Claim, Job, Outcome, Upload, jobs_per_second, new_job_id
from .store_redis_scripts import CLAIM, DELETE, EXPIRE, FINISH, RECLAIM, RELEASE, RENEW, SUBMIT

PREFIX = "toonify:"
TOMBSTONE_S = 86_400  # an expired id answers 410 for a day, then 404
FINISHED_WINDOW_S = 3600

P = ParamSpec("P")
T = TypeVar("T")


class QueueUnavailable(Unavailable):
    default_detail = (
        "The job queue cannot be reached just now; retry in a few seconds, or send the photo to "
        "POST /toonify, which does not need it."
    )


def _reached(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis's failures (down, refused, timed out) as the service's 503 ``unavailable``; a
    Redis out of memory as 503 ``queue_full``."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OutOfMemoryError:  # Redis's maxmemory, with noeviction: nothing is evicted
            raise QueueFull() from None
        except RedisError as exc:
            raise QueueUnavailable() from exc

    return call


def _float(value: bytes | None) -> float | None:
    return float(value) if value else None


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None


class RedisJobStore:
    def __init__(
        self,
        url: str,
        max_jobs: int,
        max_bytes: int,
        visibility_s: float,
        max_per_client: int = 2**31,
    ) -> None:
        # Short timeouts: a Redis that does not answer is a 503 at once, not a hung request.
        self.redis = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
        )
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.max_per_client = max_per_client
        self.visibility_s = visibility_s
        self.keys = {
            name: PREFIX + name
            for name in (
                "queued",
                "arrived",
                "running",
                "expiring",
                "finished",
                "held_bytes",
                "answers_kept",
            )
        }
        self._submit = self.redis.register_script(SUBMIT)
        self._claim = self.redis.register_script(CLAIM)
        self._renew = self.redis.register_script(RENEW)
        self._release = self.redis.register_script(RELEASE)
        self._reclaim = self.redis.register_script(RECLAIM)
        self._finish = self.redis.register_script(FINISH)
        self._delete = self.redis.register_script(DELETE)
        self._expire = self.redis.register_script(EXPIRE)

    def _job_key(self, job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    def _outcome_key(self, job_id: str) -> str:
        return f"{PREFIX}outcome:{job_id}"

    @_reached
    async def submit(self, upload: Upload) -> Job:
        job_id, now = new_job_id(), time.time()
        keys = self.keys
        taken = await self._submit(
            keys=[
                keys["queued"],
                keys["running"],
                keys["held_bytes"],
                self._job_key(job_id),
                f"{PREFIX}client:{upload.client}",
                keys["arrived"],
            ],
            args=[
                repr(now),
                upload.options.model_dump_json(),
                upload.photo,
                self.max_jobs,
                self.max_bytes,
                job_id,
                upload.webhook,
                self.max_per_client if upload.client else 2**31,
                upload.client,
            ],
        )
        if taken == -1:
            raise TooManyJobs()  # past TOONIFY_QUEUE_MAX_JOBS_PER_CLIENT
        if not taken:
            raise QueueFull()  # past TOONIFY_QUEUE_MAX_JOBS or TOONIFY_QUEUE_MAX_BYTES
        return Job(job_id, "queued", now, None, None, None, None, None)

    @_reached
    async def get(self, job_id: str) -> Job | None:
        fields = await self.redis.hmget(
            self._job_key(job_id),
            ["status", "submitted", "started", "finished", "expires", "level", "error"],
        )
        status, submitted, started, finished, expires, level, error = fields
        if status is None:
            return None
        status_text = status.decode()
        if status_text in ("done", "failed") and expires and float(expires) <= time.time():
            status_text = "expired"
        return Job(
            job_id,
            status_text,
            float(submitted),
            _float(started),
            _float(finished),
            _float(expires),
            _text(level),
            _text(error),
        )

    @_reached
    async def position(self, job: Job) -> int:
        rank = await self.redis.zrank(self.keys["queued"], job.id)
        return 0 if rank is None else rank

    @_reached
    async def depth(self) -> tuple[int, float]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys["queued"])
            pipe.zrange(self.keys["arrived"], 0, 0, withscores=True)
            count, oldest = await pipe.execute()
        return count, (time.time() - oldest[0][1]) if oldest else 0.0

    @_reached
    async def claim(self) -> Claim | None:
        token, now = secrets.token_urlsafe(16), time.time()
        taken = await self._claim(
            keys=[self.keys["queued"], self.keys["running"], self.keys["arrived"]],
            args=[repr(now), repr(now + self.visibility_s), token, PREFIX],
        )
        if not taken:
            return None
        job_id, attempt, submitted, options, photo, webhook, client = taken
        job_id = job_id.decode()
        job = Job(job_id, "running", float(submitted), now, None, None, None, None)
        upload = Upload(
            photo or b"",
            ToonifyOptions.model_validate_json(options),
            _text(webhook) or "",
            _text(client) or "",
        )
        return Claim(job, upload, token, int(attempt))

    @_reached
    async def renew(self, claim: Claim) -> bool:
        held = await self._renew(
            keys=[self.keys["running"], self._job_key(claim.job.id)],
            args=[repr(time.time() + self.visibility_s), claim.token, claim.job.id],
        )
        return bool(held)

    @_reached
    async def release(self, claim: Claim) -> bool:
        released = await self._release(
            keys=[
                self.keys["running"],
                self.keys["queued"],
                self._job_key(claim.job.id),
                self.keys["arrived"],
            ],
            args=[claim.token, claim.job.id],
        )
        return bool(released)

    @_reached
    async def finish(self, claim: Claim, outcome: Outcome, ttl_s: float) -> bool:
        now, job_id = time.time(), claim.job.id
        kept, result = outcome.record()
        finished = await self._finish(
            keys=[
                self.keys["running"],
                self.keys["held_bytes"],
                self._job_key(job_id),
                self._outcome_key(job_id),
                self.keys["finished"],
                self.keys["answers_kept"],
                self.keys["expiring"],
            ],
            args=[
                job_id,
                claim.token,
                repr(now),
                repr(now + ttl_s),
                "done" if outcome.error is None else "failed",
                outcome.level or "",
                outcome.error_code or "",
                kept,
                result,
                TOMBSTONE_S,
                FINISHED_WINDOW_S,
            ],
        )
        return bool(finished)

    @_reached
    async def outcome(self, job_id: str) -> Outcome | None:
        kept, result = await self.redis.hmget(self._outcome_key(job_id), ["outcome", "result"])
        return None if kept is None else Outcome.from_record(kept.decode(), result or b"")

    @_reached
    async def delete(self, job_id: str) -> bool:
        keys = self.keys
        deleted = await self._delete(
            keys=[
                keys["queued"],
                keys["running"],
                keys["held_bytes"],
                self._job_key(job_id),
                self._outcome_key(job_id),
                keys["expiring"],
                keys["arrived"],
            ],
            args=[job_id],
        )
        return bool(deleted)

    @_reached
    async def drain_rate(self, window_s: float) -> float:
        now, finished = time.time(), self.keys["finished"]
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            pipe.zcount(finished, now - window_s, "+inf")
            pipe.zrangebyscore(finished, now - window_s, "+inf", start=0, num=1, withscores=True)
            count, first = await pipe.execute()
        return jobs_per_second(count, first[0][1] if first else None, now)

    @_reached
    async def maintain(self) -> None:
        # Answers past their TTL deleted (and their bytes given back); lapsed claims back in line.
        now = repr(time.time())
        await self._expire(
            keys=[self.keys["expiring"], self.keys["held_bytes"]], args=[now, PREFIX]
        )
        await self._reclaim(
            keys=[self.keys["running"], self.keys["queued"], self.keys["arrived"]],
            args=[now, PREFIX],
        )

    async def close(self) -> None:
        await self.redis.aclose()
