"""The embedded job store: one SQLite file in ``TOONIFY_QUEUE_DIR``, for one instance (jobs.py
says what every store promises)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import QueueFull, TooManyJobs
from .model import Answer, Claim, Job, Upload, jobs_per_second, new_job_id

T = TypeVar("T")

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


def _off_the_loop(method: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """The store's method run in the store's own thread, one call after another: a submission
    writes a photo of up to 20 MB with ``secure_delete`` and an fsync, which the entry's event
    loop (every request of the instance) must not wait for."""

    @functools.wraps(method)
    async def run(self: SQLiteJobStore, *args: Any, **kwargs: Any) -> T:
        call = functools.partial(method, self, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    return run


class SQLiteJobStore:
    """The embedded store: one SQLite file, used from a thread of its own."""

    def __init__(
        self, folder: Path, max_jobs: int, max_bytes: int, max_per_client: int = 2**31
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="job-store")
        # Used by that thread alone once open (one call at a time).
        self.db = sqlite3.connect(
            folder / "jobs.sqlite3", isolation_level=None, check_same_thread=False
        )
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
        if "client" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN client TEXT NOT NULL DEFAULT ''")
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_by_client ON jobs (client, status)")
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.max_per_client = max_per_client
        # A job running when the server stopped runs again (at least once, never lost).
        self.db.execute(
            "UPDATE jobs SET status = 'queued', started = NULL WHERE status = 'running'"
        )

    @_off_the_loop
    def submit(self, upload: Upload) -> Job:
        (waiting,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
        ).fetchone()
        # What the store holds: the photos waiting and the answers kept.
        (size,) = self.db.execute(
            "SELECT COALESCE(SUM(LENGTH(photo)), 0) + COALESCE(SUM(LENGTH(answer)), 0) FROM jobs"
        ).fetchone()
        if waiting >= self.max_jobs or size + len(upload.body) > self.max_bytes:
            raise QueueFull()  # past TOONIFY_QUEUE_MAX_JOBS or TOONIFY_QUEUE_MAX_BYTES
        (own,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE client = ? AND status IN ('queued', 'running')",
            (upload.client,),
        ).fetchone()
        if upload.client and own >= self.max_per_client:
            raise TooManyJobs()  # past TOONIFY_QUEUE_MAX_JOBS_PER_CLIENT
        job_id = new_job_id()
        self.db.execute(
            "INSERT INTO jobs (id, status, submitted, path, query, content_type, photo, webhook, "
            "client) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                time.time(),
                upload.path,
                upload.query,
                upload.content_type,
                upload.body,
                upload.webhook,
                upload.client,
            ),
        )
        return self._get(job_id)

    @_off_the_loop
    def get(self, job_id: str) -> Job | None:
        return self._get(job_id)

    def _get(self, job_id: str) -> Job | None:
        row = self.db.execute(
            "SELECT id, status, submitted, started, finished, expires, level, error FROM jobs "
            "WHERE id = ?",
            (job_id,),
        ).fetchone()
        return Job(*row) if row else None

    @_off_the_loop
    def position(self, job: Job) -> int:
        (ahead,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND submitted < ?",
            (job.submitted,),
        ).fetchone()
        return ahead

    @_off_the_loop
    def depth(self) -> tuple[int, float]:
        count, oldest = self.db.execute(
            "SELECT COUNT(*), MIN(submitted) FROM jobs WHERE status = 'queued'"
        ).fetchone()
        return count, (time.time() - oldest) if oldest else 0.0

    @_off_the_loop
    def claim(self) -> Claim | None:
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

    @_off_the_loop
    def renew(self, claim: Claim) -> bool:
        return self._get(claim.job.id) is not None

    @_off_the_loop
    def release(self, claim: Claim) -> bool:
        return (
            self.db.execute(
                "UPDATE jobs SET status = 'queued', started = NULL "
                "WHERE id = ? AND status = 'running'",
                (claim.job.id,),
            ).rowcount
            > 0
        )

    @_off_the_loop
    def finish(self, claim: Claim, answer: Answer, level: str | None, ttl_s: float) -> bool:
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

    @_off_the_loop
    def answer(self, job_id: str) -> Answer | None:
        row = self.db.execute(
            "SELECT answer_status, answer_headers, answer FROM jobs WHERE id = ? AND "
            "status IN ('done', 'failed')",
            (job_id,),
        ).fetchone()
        return Answer.of(*row) if row else None

    @_off_the_loop
    def delete(self, job_id: str) -> bool:
        return self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    @_off_the_loop
    def drain_rate(self, window_s: float) -> float:
        now = time.time()
        count, first = self.db.execute(
            "SELECT COUNT(*), MIN(finished) FROM jobs WHERE finished > ?", (now - window_s,)
        ).fetchone()
        return jobs_per_second(count, first, now)

    @_off_the_loop
    def maintain(self) -> None:
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
        await asyncio.get_running_loop().run_in_executor(self._thread, self.db.close)
        self._thread.shutdown()
