"""Jobs: past capacity, a person waits in line instead of being turned away.

``POST /jobs`` (or ``/toonify`` with ``Prefer: respond-async``) takes exactly what ``POST
/toonify`` takes, checks it the same way, and answers 202 with the job's id at once; the photo and
its options wait in a store. An instance runs a job only while it has a free processing slot at the
full level, so the queue never slows ``/toonify``, and runs it through the same typed call
``/toonify`` makes (runner.py): the outcome kept is the toonified photo or the error, answered by
the same code ``/toonify`` answers with, until ``TOONIFY_RESULT_TTL_S``.

The line is fair: the next job is the oldest of the client whose turn it is, round robin over the
clients with jobs waiting. Each job gets a round when it is queued (one past its client's last
waiting job, and never before the line's first), and the line is ordered by round, then by
arrival: a client with 40 jobs waiting has one in each of 40 rounds, and a newcomer's one job
goes in the round being served. A job's position is the jobs before it in that order.

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

from ..errors import error_body, error_from_body, status_of
from ..schema import ToonifiedPhoto, ToonifyOptions

ID_BYTES = 16  # 128 random bits
STATUSES = ("queued", "running", "done", "failed", "expired")


@dataclass(frozen=True)
class Upload:
    """A job's input, checked at its submission: the photo and the options it came with."""

    photo: bytes
    options: ToonifyOptions
    webhook: str = ""  # told when the job ends (webhooks.py)
    client: str = ""  # who submitted it (the gateway's client network): its turn in the line


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
class Outcome:
    """How a job's run ended: the toonified photo, or the error ``/toonify`` would have answered
    (``error``), with the options it was asked with, as ``GET /jobs/{id}/result`` answers it."""

    options: ToonifyOptions
    photo: ToonifiedPhoto | None = None
    error: Exception | None = None

    @property
    def status(self) -> int:
        return 200 if self.error is None else status_of(self.error)

    @property
    def error_code(self) -> str | None:
        return None if self.error is None else error_body(self.error)["error"]

    @property
    def level(self) -> str | None:
        return self.photo.level.value if self.photo is not None else None

    def record(self) -> tuple[str, bytes]:
        """What a store keeps: everything but the image as JSON, and the image's bytes."""
        kept: dict = {"options": self.options.model_dump(mode="json")}
        if self.photo is not None:
            kept["photo"] = self.photo.model_dump(mode="json", exclude={"image"})
            return json.dumps(kept), self.photo.image
        kept["status"], kept["error"] = self.status, error_body(self.error)  # type: ignore[arg-type]
        return json.dumps(kept), b""

    @classmethod
    def from_record(cls, text: str, image: bytes) -> Outcome:
        kept = json.loads(text)
        options = ToonifyOptions.model_validate(kept["options"])
        if "photo" in kept:
            return cls(
                options, photo=ToonifiedPhoto.model_validate({**kept["photo"], "image": image})
            )
        return cls(options, error=error_from_body(kept["status"], json.dumps(kept["error"])))


@dataclass(frozen=True)
class Claim:
    """A job taken to run: its input, and the token only this run can finish it with."""

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
        """The first job in the line (the oldest of the client whose turn it is), now running
        under a new claim."""
        ...

    async def renew(self, claim: Claim) -> bool:
        """The claim kept for another visibility timeout; False if it was lost."""
        ...

    async def release(self, claim: Claim) -> bool:
        """The job back in line at its old place, its claim ended (a run that failed for a
        passing reason: it runs again); False if the claim no longer held it."""
        ...

    async def finish(self, claim: Claim, outcome: Outcome, ttl_s: float) -> bool:
        """The outcome kept until its TTL and the photo deleted, if ``claim`` still holds the job
        (False: it was deleted, or taken again after the claim lapsed, and this outcome is not
        kept)."""
        ...

    async def outcome(self, job_id: str) -> Outcome | None:
        """How an ended job ended (None while it waits or runs)."""
        ...

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
