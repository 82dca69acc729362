"""The job store the settings name: Redis shared by a fleet, or the embedded SQLite file."""

from __future__ import annotations

from pathlib import Path

from .model import JobStore


def open_store(
    url: str,
    folder: Path,
    max_jobs: int,
    max_bytes: int,
    visibility_s: float,
    max_per_client: int = 2**31,
) -> JobStore:
    """The store the settings name: Redis at ``url``, else SQLite in ``folder``."""
    if url:
        from .store_redis import RedisJobStore

        return RedisJobStore(url, max_jobs, max_bytes, visibility_s, max_per_client)
    from .store_sqlite import SQLiteJobStore

    return SQLiteJobStore(folder, max_jobs, max_bytes, max_per_client)
