"""Graceful shutdown across services: dependencies keep serving until the entry has drained.

On SIGTERM BentoML stops every service's workers at once. The entry worker answers its
in-flight requests before it exits (uvicorn's graceful shutdown), but those requests still call
the preprocessing and generator services, which would have closed already. So the entry worker
holds a shared lock on a file for as long as it runs, and a dependency worker that gets SIGTERM
keeps serving until it can take that lock exclusively (every entry worker has exited, however it
ended) or its grace period is over, and only then starts its own graceful shutdown.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

logger = logging.getLogger("toonify.shutdown")

_held: list[int] = []  # the entry's lock, open for the life of the process
# Set at the first SIGTERM or SIGINT in the entry worker, before the server's own handling: the
# job queue stops starting jobs at once, while the server drains its requests.
STOPPING = threading.Event()


def lock_path() -> Path:
    """One file per `bentoml serve`: every worker is a child of its arbiter process."""
    return Path(tempfile.gettempdir()) / f"toonify-entry-{os.getppid()}.lock"


def hold_while_running() -> None:
    """In the entry worker: hold the shared lock until the process exits, and set ``STOPPING``
    at the first signal before the server handles it."""
    descriptor = os.open(lock_path(), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    _held.append(descriptor)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        server_handler = signal.getsignal(signum)
        if callable(server_handler):
            signal.signal(signum, _noting_stop(server_handler))


def _noting_stop(server_handler):
    def handler(received: int, frame) -> None:
        STOPPING.set()
        server_handler(received, frame)

    return handler


def entry_has_exited(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    return True


def drain_after_entry(grace_s: float) -> None:
    """In a dependency worker: defer the server's own SIGTERM/SIGINT handling until the entry
    has exited or ``grace_s`` has passed. A second signal acts at once. (Outside the main
    thread, where the service runs in-process, signals are not ours to handle.)"""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        _defer(signum, signal.getsignal(signum), grace_s)


def _defer(signum: int, server_handler, grace_s: float) -> None:
    if not callable(server_handler):
        logger.warning(
            "signal %s has no server handler to defer; it stops this worker at once", signum
        )
        return
    waiting = threading.Event()

    def wait_then_stop(frame) -> None:
        descriptor = os.open(lock_path(), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            deadline = time.monotonic() + grace_s
            while not entry_has_exited(descriptor) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            os.close(descriptor)
        logger.info("entry service has drained; stopping")
        server_handler(signum, frame)

    def handler(received: int, frame) -> None:
        if waiting.is_set():
            server_handler(received, frame)
            return
        waiting.set()
        logger.info("signal %s: serving until the entry service has drained", received)
        threading.Thread(target=wait_then_stop, args=(frame,), daemon=True).start()

    signal.signal(signum, handler)
