"""The embedded job store: one SQLite file in ``TOONIFY_QUEUE_DIR``, for one instance (jobs.py
says what every store promises)."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import QueueFull, TooManyJobs
from ..schema import ToonifyOptions
from .model import Claim, Job, Outcome, Upload, jobs_per_second, new_job_id

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    expires REAL,
    client TEXT NOT NULL,
    round INTEGER NOT NULL,
    options TEXT NOT NULL,
    photo BLOB,
    outcome TEXT,
    result BLOB,
    level TEXT,
    error TEXT,
    webhook TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_in_line ON jobs (status, round);
CREATE INDEX IF NOT EXISTS jobs_by_age ON jobs (status, submitted);
CREATE INDEX IF NOT EXISTS jobs_of_client ON jobs (client, status, round);
"""
WAITING = "status IN ('queued', 'running')"
logger = logging.getLogger("toonify.jobs")


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
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if columns and "round" not in columns:  # a store of an earlier version: HTTP bodies
            (count,) = self.db.execute("SELECT COUNT(*) FROM jobs").fetchone()
            logger.warning(
                "the job store %s is of an earlier version: its %d jobs are dropped", folder, count
            )
            self.db.execute("DROP TABLE jobs")
        self.db.executescript(SCHEMA)
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.max_per_client = max_per_client
        # A job running when the server stopped runs again (at least once, never lost).
        self.db.execute(
            "UPDATE jobs SET status = 'queued', started = NULL WHERE status = 'running'"
        )
        # The bounds' totals, kept as counters: a submission must not count and sum the table.
        (self.waiting,) = self.db.execute(f"SELECT COUNT(*) FROM jobs WHERE {WAITING}").fetchone()
        (self.held_bytes,) = self.db.execute(
            "SELECT COALESCE(SUM(LENGTH(photo)), 0) + COALESCE(SUM(LENGTH(result)), 0) FROM jobs"
        ).fetchone()

    @_off_the_loop
    def submit(self, upload: Upload) -> Job:
        if self.waiting >= self.max_jobs or self.held_bytes + len(upload.photo) > self.max_bytes:
            raise QueueFull()  # past TOONIFY_QUEUE_MAX_JOBS or TOONIFY_QUEUE_MAX_BYTES
        (own, last) = self.db.execute(
            f"SELECT COUNT(*), MAX(round) FROM jobs WHERE client = ? AND {WAITING}",
            (upload.client,),
        ).fetchone()
        if upload.client and own >= self.max_per_client:
            raise TooManyJobs()  # past TOONIFY_QUEUE_MAX_JOBS_PER_CLIENT
        (first,) = self.db.execute("SELECT MIN(round) FROM jobs WHERE status = 'queued'").fetchone()
        # Its turn: one round past the client's last waiting job, never before the line's first.
        turn = max(first or 0, -1 if last is None else last + 1)
        job_id = new_job_id()
        self.db.execute(
            "INSERT INTO jobs (id, status, submitted, client, round, options, photo, webhook) "
            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                time.time(),
                upload.client,
                turn,
                upload.options.model_dump_json(),
                upload.photo,
                upload.webhook,
            ),
        )
        self.waiting += 1
        self.held_bytes += len(upload.photo)
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
        place = self.db.execute("SELECT round, rowid FROM jobs WHERE id = ?", (job.id,)).fetchone()
        if place is None:
            return 0
        (ahead,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND "
            "(round < ? OR (round = ? AND rowid < ?))",
            (place[0], place[0], place[1]),
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
            "SELECT id, photo, options, webhook, client, attempts FROM jobs "
            "WHERE status = 'queued' ORDER BY round, rowid LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        job_id, photo, options, webhook, client, attempts = row
        self.db.execute(
            "UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1 WHERE id = ?",
            (time.time(), job_id),
        )
        # One process runs this store's jobs: a claim lapses only with the process, and a
        # restart queues its running jobs again (__init__).
        upload = Upload(photo, ToonifyOptions.model_validate_json(options), webhook or "", client)
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
    def finish(self, claim: Claim, outcome: Outcome, ttl_s: float) -> bool:
        now = time.time()
        held = self.db.execute(
            "SELECT LENGTH(photo) FROM jobs WHERE id = ? AND status = 'running'", (claim.job.id,)
        ).fetchone()
        if held is None:
            return False
        kept, result = outcome.record()
        self.db.execute(
            "UPDATE jobs SET status = ?, finished = ?, expires = ?, photo = NULL, webhook = NULL, "
            "outcome = ?, result = ?, level = ?, error = ? WHERE id = ?",
            (
                "done" if outcome.error is None else "failed",
                now,
                now + ttl_s,
                kept,
                result,
                outcome.level,
                outcome.error_code,
                claim.job.id,
            ),
        )
        self.waiting -= 1
        self.held_bytes += len(result) - (held[0] or 0)
        return True

    @_off_the_loop
    def outcome(self, job_id: str) -> Outcome | None:
        row = self.db.execute(
            "SELECT outcome, result FROM jobs WHERE id = ? AND status IN ('done', 'failed')",
            (job_id,),
        ).fetchone()
        return Outcome.from_record(row[0], row[1] or b"") if row else None

    @_off_the_loop
    def delete(self, job_id: str) -> bool:
        row = self.db.execute(
            f"SELECT {WAITING}, COALESCE(LENGTH(photo), 0) + COALESCE(LENGTH(result), 0) "
            "FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return False
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.waiting -= row[0]
        self.held_bytes -= row[1]
        return True

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
        due = "status IN ('done', 'failed') AND expires <= ?"
        (freed,) = self.db.execute(
            f"SELECT COALESCE(SUM(LENGTH(result)), 0) FROM jobs WHERE {due}", (now,)
        ).fetchone()
        expired = self.db.execute(
            f"UPDATE jobs SET status = 'expired', outcome = NULL, result = NULL, photo = NULL "
            f"WHERE {due}",
            (now,),
        ).rowcount
        self.held_bytes -= freed
        self.db.execute(
            "DELETE FROM jobs WHERE status = 'expired' AND expires <= ?",
            (now - keep_tombstones_s,),
        )
        return expired

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self.db.close)
        self._thread.shutdown()
