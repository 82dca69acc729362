"""Jobs: past capacity, a person waits in line instead of being turned away.

``POST /jobs`` takes exactly what ``POST /toonify`` takes, checks it the same way, and answers 202
with the job's id at once; the photo waits in a store. An instance runs a job only while it has a
free processing slot at the full level, so the queue never slows ``/toonify``, and runs it by
replaying the upload through the service as a ``POST /toonify``: the result is the answer
``/toonify`` would have given (status, headers, body), kept until ``TOONIFY_RESULT_TTL_S``.

Two stores keep the same promises (``JobStore``): the embedded one, SQLite in
``TOONIFY_QUEUE_DIR`` (store_sqlite.py: one instance; it survives a restart of the server),
and Redis at ``TOONIFY_QUEUE_URL``, shared by a fleet (store_redis.py); ``stores.py``
opens the one the settings name. A queued photo is kept until its
job ends and deleted then; a result is deleted at its TTL or by ``DELETE /jobs/{id}``. The id
(128 random bits) is the only key. A job is run at least once and answered once: a job whose
instance stopped is taken again, and only the claim that still holds it may finish it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Protocol

ID_BYTES = 16  # 128 random bits
STATUSES = ("queued", "running", "done", "failed", "expired")


@dataclass(frozen=True)
class Upload:
    """What to replay: the path of the API, its query and content type, and the body."""

    path: str
    query: bytes
    content_type: bytes
    body: bytes
    webhook: str = ""  # told when the job ends (webhooks.py)
    client: str = ""  # who submitted it (the gateway's client network): its jobs are bounded


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    submitted: float
    started: float | None
    finished: float | None
    expires: float | None
    level: str | None
    error: str | None


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def error(self) -> str | None:
        """The error code of a failed answer (the documented JSON form), None for a success."""
        if self.status < 400:
            return None
        try:
            return json.loads(self.body or b"{}").get("error", "internal")
        except ValueError:
            return "internal"

    def headers_json(self) -> str:
        return json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers])

    @classmethod
    def of(cls, status: int, headers_json: str, body: bytes) -> Answer:
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in json.loads(headers_json)]
        return cls(status, pairs, body)


@dataclass(frozen=True)
class Claim:
    """A job taken to run: what to replay, and the token only this run can finish it with."""

    job: Job
    upload: Upload
    token: str
    attempt: int = 1  # this run's number: a job whose run failed for a passing reason runs again


def new_job_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


class JobStore(Protocol):
    """Where jobs wait, run and end. Every call may raise ``Unavailable`` (a store that cannot be
    reached) and submit raises ``QueueFull`` past the bounds."""

    async def submit(self, upload: Upload) -> Job: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def position(self, job: Job) -> int:
        """How many queued jobs are ahead of ``job`` (0: it is next)."""
        ...

    async def depth(self) -> tuple[int, float]:
        """Queued jobs, and the age of the oldest in seconds."""
        ...

    async def claim(self) -> Claim | None:
        """The oldest queued job, now running under a new claim."""
        ...

    async def renew(self, claim: Claim) -> bool:
        """The claim kept for another visibility timeout; False if it was lost."""
        ...

    async def release(self, claim: Claim) -> bool:
        """The job back in line at its old place, its claim ended (a run that failed for a
        passing reason: it runs again); False if the claim no longer held it."""
        ...

    async def finish(self, claim: Claim, answer: Answer, level: str | None, ttl_s: float) -> bool:
        """The answer kept until its TTL and the photo deleted, if ``claim`` still holds the job
        (False: it was deleted, or taken again after the claim lapsed, and this answer is not
        kept)."""
        ...

    async def answer(self, job_id: str) -> Answer | None: ...

    async def delete(self, job_id: str) -> bool:
        """The photo and the answer gone at once; the id answers 404 from now on."""
        ...

    async def drain_rate(self, window_s: float) -> float:
        """Jobs finished per second over the last ``window_s``, by every instance."""
        ...

    async def maintain(self) -> None:
        """Periodic upkeep: expired results deleted, lapsed claims given back to the queue."""
        ...

    async def close(self) -> None: ...


def jobs_per_second(count: int, first: float | None, now: float) -> float:
    """A drain rate from the jobs finished in a window and the first of them: 0 before two."""
    if count < 2 or first is None:
        return 0.0
    return count / max(now - first, 1.0)


def eta_s(position: int, per_second: float) -> float | None:
    """Seconds until a job with ``position`` jobs ahead of it is done; None before any job has
    been measured."""
    return round((position + 1) / per_second, 1) if per_second > 0 else None


def is_job_id(text: str) -> bool:
    """The shape of an id this store makes (22 URL-safe characters); anything else is 404."""
    return len(text) == 22 and all(c.isalnum() or c in "-_" for c in text)
