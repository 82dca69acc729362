"""Jobs: past capacity, a person waits in line instead of being turned away.

``POST /jobs`` takes exactly what ``POST /toonify`` takes, checks it the same way, and answers 202
with the job's id at once; the photo waits in a store. The instance runs a job only while it has a
free processing slot at the full level, so the queue never slows ``/toonify``, and runs it by
replaying the upload through the service as a ``POST /toonify``: the result is the answer
``/toonify`` would have given (status, headers, body), kept until ``TOONIFY_RESULT_TTL_S``.

The store is SQLite in ``TOONIFY_QUEUE_DIR`` (it survives a restart of the server). A queued
photo is on that disk until its job ends, and is deleted then; a result is deleted at its TTL or
by ``DELETE /jobs/{id}``. The id (128 random bits) is the only key.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

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
    error TEXT
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


class JobStore:
    """The embedded store: one SQLite file, used from the entry worker's event loop thread."""

    def __init__(self, folder: Path, max_jobs: int, max_bytes: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(folder / "jobs.sqlite3", isolation_level=None)
        # Deleted photos and answers are overwritten in the file, not left in free pages; the
        # rollback journal that briefly holds them is deleted after each write.
        self.db.execute("PRAGMA secure_delete = ON")
        self.db.execute("PRAGMA journal_mode = DELETE")
        self.db.executescript(SCHEMA)
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        # A job running when the server stopped runs again (at least once, never lost).
        self.db.execute(
            "UPDATE jobs SET status = 'queued', started = NULL WHERE status = 'running'"
        )

    def submit(self, upload: Upload) -> Job:
        waiting, size = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(photo)), 0) FROM jobs "
            "WHERE status IN ('queued', 'running')"
        ).fetchone()
        if waiting >= self.max_jobs or size + len(upload.body) > self.max_bytes:
            raise QueueFull()  # past TOONIFY_QUEUE_MAX_JOBS or TOONIFY_QUEUE_MAX_BYTES
        job_id = secrets.token_urlsafe(ID_BYTES)
        self.db.execute(
            "INSERT INTO jobs (id, status, submitted, path, query, content_type, photo) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
            (job_id, time.time(), upload.path, upload.query, upload.content_type, upload.body),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        row = self.db.execute(
            "SELECT id, status, submitted, started, finished, expires, level, error FROM jobs "
            "WHERE id = ?",
            (job_id,),
        ).fetchone()
        return Job(*row) if row else None

    def position(self, job: Job) -> int:
        """How many queued jobs are ahead of ``job`` (0: it is next)."""
        (ahead,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND submitted < ?",
            (job.submitted,),
        ).fetchone()
        return ahead

    def depth(self) -> tuple[int, float]:
        """Queued jobs, and the age of the oldest in seconds."""
        count, oldest = self.db.execute(
            "SELECT COUNT(*), MIN(submitted) FROM jobs WHERE status = 'queued'"
        ).fetchone()
        return count, (time.time() - oldest) if oldest else 0.0

    def claim(self) -> tuple[Job, Upload] | None:
        """The oldest queued job, now running."""
        row = self.db.execute(
            "SELECT id, path, query, content_type, photo FROM jobs WHERE status = 'queued' "
            "ORDER BY submitted LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        job_id, path, query, content_type, photo = row
        self.db.execute(
            "UPDATE jobs SET status = 'running', started = ? WHERE id = ?", (time.time(), job_id)
        )
        return self.get(job_id), Upload(path, query, content_type, photo)

    def finish(self, job_id: str, answer: Answer, level: str | None, ttl_s: float) -> None:
        """The job's answer kept until its TTL; its photo deleted now."""
        ok = answer.status < 400
        error = None if ok else json.loads(answer.body or b"{}").get("error", "internal")
        now = time.time()
        self.db.execute(
            "UPDATE jobs SET status = ?, finished = ?, expires = ?, photo = NULL, "
            "answer_status = ?, answer_headers = ?, answer = ?, level = ?, error = ? WHERE id = ?",
            (
                "done" if ok else "failed",
                now,
                now + ttl_s,
                answer.status,
                json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in answer.headers]),
                answer.body,
                level,
                error,
                job_id,
            ),
        )

    def answer(self, job_id: str) -> Answer | None:
        row = self.db.execute(
            "SELECT answer_status, answer_headers, answer FROM jobs WHERE id = ? AND "
            "status IN ('done', 'failed')",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        status, headers, body = row
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in json.loads(headers)]
        return Answer(status, pairs, body)

    def delete(self, job_id: str) -> bool:
        """The photo and the answer gone at once; the id answers 404 from now on."""
        return self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

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


class DrainRate:
    """Jobs finished per second over the last ``window_s``: what position and ETA come from."""

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        self.finished: list[float] = []

    def add(self, when: float) -> None:
        self.finished.append(when)

    def per_second(self, now: float) -> float:
        self.finished = [t for t in self.finished if t > now - self.window_s]
        if len(self.finished) < 2:
            return 0.0
        return len(self.finished) / max(now - self.finished[0], 1.0)

    def eta_s(self, position: int, now: float) -> float | None:
        """Seconds until a job with ``position`` jobs ahead of it is done; None before any
        job has been measured."""
        rate = self.per_second(now)
        return round((position + 1) / rate, 1) if rate > 0 else None


def is_job_id(text: str) -> bool:
    """The shape of an id this store makes (22 URL-safe characters); anything else is 404."""
    return len(text) == 22 and all(c.isalnum() or c in "-_" for c in text)
