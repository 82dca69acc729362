"""Jobs: past capacity, a person waits in line instead of being turned away.

``POST /jobs`` takes exactly what ``POST /toonify`` takes, checks it the same way, and answers 202
with the job's id at once; the photo waits in a store. An instance runs a job only while it has a
free processing slot at the full level, so the queue never slows ``/toonify``, and runs it by
replaying the upload through the service as a ``POST /toonify``: the result is the answer
``/toonify`` would have given (status, headers, body), kept until ``TOONIFY_RESULT_TTL_S``.

Two stores keep the same promises (``JobStore``): the embedded one, SQLite in
``TOONIFY_QUEUE_DIR`` (one instance; it survives a restart of the server), and Redis at
``TOONIFY_QUEUE_URL``, shared by a fleet (job_store_redis.py). A queued photo is kept until its
job ends and deleted then; a result is deleted at its TTL or by ``DELETE /jobs/{id}``. The id
(128 random bits) is the only key. A job is run at least once and answered once: a job whose
instance stopped is taken again, and only the claim that still holds it may finish it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import QueueFull

ID_BYTES = 16  # 128 random bits
STATUSES = ("queued", "running", "done", "failed", "expired")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    expires REAL,
    path TEXT NOT NULL,
    query BLOB NOT NULL,
    content_type BLOB NOT NULL,
    photo BLOB,
    answer_status INTEGER,
    answer_headers TEXT,
    answer BLOB,
    level TEXT,
    error TEXT,
    webhook TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, submitted);
"""


@dataclass(frozen=True)
class Upload:
    """What to replay: the path of the API, its query and content type, and the body."""

    path: str
    query: bytes
    content_type: bytes
    body: bytes
    webhook: str = ""  # told when the job ends (webhooks.py)


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


class SQLiteJobStore:
    """The embedded store: one SQLite file, used from the entry worker's event loop thread (each
    call is a local transaction of well under a millisecond)."""

    def __init__(self, folder: Path, max_jobs: int, max_bytes: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(folder / "jobs.sqlite3", isolation_level=None)
        # Deleted photos and answers are overwritten in the file, not left in free pages; the
        # rollback journal that briefly holds them is deleted after each write.
        self.db.execute("PRAGMA secure_delete = ON")
        self.db.execute("PRAGMA journal_mode = DELETE")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if "webhook" not in columns:  # a store made before webhooks
            self.db.execute("ALTER TABLE jobs ADD COLUMN webhook TEXT")
        if "attempts" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        # A job running when the server stopped runs again (at least once, never lost).
        self.db.execute(
            "UPDATE jobs SET status = 'queued', started = NULL WHERE status = 'running'"
        )

    async def submit(self, upload: Upload) -> Job:
        (waiting,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
        ).fetchone()
        # What the store holds: the photos waiting and the answers kept.
        (size,) = self.db.execute(
            "SELECT COALESCE(SUM(LENGTH(photo)), 0) + COALESCE(SUM(LENGTH(answer)), 0) FROM jobs"
        ).fetchone()
        if waiting >= self.max_jobs or size + len(upload.body) > self.max_bytes:
            raise QueueFull()  # past TOONIFY_QUEUE_MAX_JOBS or TOONIFY_QUEUE_MAX_BYTES
        job_id = new_job_id()
        self.db.execute(
            "INSERT INTO jobs (id, status, submitted, path, query, content_type, photo, webhook) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                time.time(),
                upload.path,
                upload.query,
                upload.content_type,
                upload.body,
                upload.webhook,
            ),
        )
        return self._get(job_id)

    async def get(self, job_id: str) -> Job | None:
        return self._get(job_id)

    def _get(self, job_id: str) -> Job | None:
        row = self.db.execute(
            "SELECT id, status, submitted, started, finished, expires, level, error FROM jobs "
            "WHERE id = ?",
            (job_id,),
        ).fetchone()
        return Job(*row) if row else None

    async def position(self, job: Job) -> int:
        (ahead,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND submitted < ?",
            (job.submitted,),
        ).fetchone()
        return ahead

    async def depth(self) -> tuple[int, float]:
        count, oldest = self.db.execute(
            "SELECT COUNT(*), MIN(submitted) FROM jobs WHERE status = 'queued'"
        ).fetchone()
        return count, (time.time() - oldest) if oldest else 0.0

    async def claim(self) -> Claim | None:
        row = self.db.execute(
            "SELECT id, path, query, content_type, photo, webhook, attempts FROM jobs "
            "WHERE status = 'queued' ORDER BY submitted LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        job_id, path, query, content_type, photo, webhook, attempts = row
        self.db.execute(
            "UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1 WHERE id = ?",
            (time.time(), job_id),
        )
        # One process runs this store's jobs: a claim lapses only with the process, and a
        # restart queues its running jobs again (__init__).
        upload = Upload(path, query, content_type, photo, webhook or "")
        return Claim(self._get(job_id), upload, "", attempts + 1)

    async def renew(self, claim: Claim) -> bool:
        return self._get(claim.job.id) is not None

    async def release(self, claim: Claim) -> bool:
        return (
            self.db.execute(
                "UPDATE jobs SET status = 'queued', started = NULL "
                "WHERE id = ? AND status = 'running'",
                (claim.job.id,),
            ).rowcount
            > 0
        )

    async def finish(self, claim: Claim, answer: Answer, level: str | None, ttl_s: float) -> bool:
        now = time.time()
        return (
            self.db.execute(
                "UPDATE jobs SET status = ?, finished = ?, expires = ?, photo = NULL, "
                "webhook = NULL, answer_status = ?, answer_headers = ?, answer = ?, level = ?, "
                "error = ? WHERE id = ? AND status = 'running'",
                (
                    "done" if answer.status < 400 else "failed",
                    now,
                    now + ttl_s,
                    answer.status,
                    answer.headers_json(),
                    answer.body,
                    level,
                    answer.error,
                    claim.job.id,
                ),
            ).rowcount
            > 0
        )

    async def answer(self, job_id: str) -> Answer | None:
        row = self.db.execute(
            "SELECT answer_status, answer_headers, answer FROM jobs WHERE id = ? AND "
            "status IN ('done', 'failed')",
            (job_id,),
        ).fetchone()
        return Answer.of(*row) if row else None

    async def delete(self, job_id: str) -> bool:
        return self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    async def drain_rate(self, window_s: float) -> float:
        now = time.time()
        count, first = self.db.execute(
            "SELECT COUNT(*), MIN(finished) FROM jobs WHERE finished > ?", (now - window_s,)
        ).fetchone()
        return jobs_per_second(count, first, now)

    async def maintain(self) -> None:
        self.expire()

    def expire(self, keep_tombstones_s: float = 86_400.0) -> int:
        """Answers past their TTL deleted (their ids answer 410 for a day, then 404)."""
        now = time.time()
        expired = self.db.execute(
            "UPDATE jobs SET status = 'expired', answer = NULL, answer_headers = NULL, "
            "photo = NULL WHERE status IN ('done', 'failed') AND expires <= ?",
            (now,),
        ).rowcount
        self.db.execute(
            "DELETE FROM jobs WHERE status = 'expired' AND expires <= ?",
            (now - keep_tombstones_s,),
        )
        return expired

    async def close(self) -> None:
        self.db.close()


def jobs_per_second(count: int, first: float | None, now: float) -> float:
    """A drain rate from the jobs finished in a window and the first of them: 0 before two."""
    if count < 2 or first is None:
        return 0.0
    return count / max(now - first, 1.0)


def eta_s(position: int, per_second: float) -> float | None:
    """Seconds until a job with ``position`` jobs ahead of it is done; None before any job has
    been measured."""
    return round((position + 1) / per_second, 1) if per_second > 0 else None


def open_store(url: str, folder: Path, max_jobs: int, max_bytes: int, visibility_s: float):
    """The store the settings name: Redis at ``url``, else SQLite in ``folder``."""
    if url:
        from .job_store_redis import RedisJobStore

        return RedisJobStore(url, max_jobs, max_bytes, visibility_s)
    return SQLiteJobStore(folder, max_jobs, max_bytes)


def is_job_id(text: str) -> bool:
    """The shape of an id this store makes (22 URL-safe characters); anything else is 404."""
    return len(text) == 22 and all(c.isalnum() or c in "-_" for c in text)
