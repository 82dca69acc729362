"""The job queue's runner, in the entry worker: it takes the next job while the instance has
capacity to spare (at most ``TOONIFY_QUEUE_MAX_RUNNING``, one while a /toonify is in flight),
keeps its claim while it runs, stores its answer once, and tells its webhook."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from .. import metrics, shutdown
from ..error_answers import ErrorAnswers, error_response
from ..errors import outcome
from ..jobs.model import Answer, Claim, JobStore, Upload
from ..jobs.webhooks import WebhookSender
from ..levels import Level
from ..request import RequestState
from .uploads import replay

logger = logging.getLogger("toonify.jobs")
QUEUE_CLIENT = "queue"  # what running jobs count against in the fairness tables
# A run answered with one of these failed for a passing reason (a part restarting, a deadline
# under load): the job goes back in line, up to MAX_ATTEMPTS runs.
PASSING_FAILURES = (502, 503, 504)
MAX_ATTEMPTS = 3
DRAIN_WINDOW_S = 300.0  # position and ETA come from the jobs finished in this window


class JobRunner:
    def __init__(
        self, gateway: Any, webhooks: WebhookSender, status: Callable[[Any], Awaitable[dict]]
    ) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.webhooks = webhooks
        self.status = status  # a job's status as GET /jobs/{id} answers it (for its webhook)
        self.store: JobStore = None  # type: ignore[assignment]  # set by start()
        self.wake = asyncio.Event()
        self.drain_rate = 0.0  # jobs finished per second over DRAIN_WINDOW_S, read each round
        self._loop: asyncio.Task | None = None
        self._running: dict[asyncio.Task, Claim] = {}
        self._app_scope: dict = {}

    def start(self, store: JobStore, lifespan_scope: dict) -> None:
        self.store = store
        self._app_scope = {k: lifespan_scope[k] for k in ("app", "state") if k in lifespan_scope}
        self._loop = asyncio.create_task(self._run_jobs())

    async def stop(self) -> None:
        """At the server's shutdown (SIGTERM stopped new jobs already): running jobs finish
        within their deadline; any still running then goes back in line at its place."""
        if self._loop is not None:
            self._loop.cancel()
        if self._running:
            logger.info("stopping: waiting for %d running jobs", len(self._running))
            claims = dict(self._running)
            await asyncio.wait(claims, timeout=self.settings.request_timeout_s)
            for task, claim in claims.items():
                if not task.done():
                    task.cancel()
                    try:
                        await self.store.release(claim)
                    except Exception as exc:  # its claim lapses instead: it runs again
                        logger.warning("job %s: not put back in line: %r", claim.job.id, exc)

    def _may_start_a_job(self) -> bool:
        """A job starts while the instance is below the full level and fewer than
        ``queue_max_running`` jobs run, or fewer than one while a /toonify is in flight: jobs
        use the capacity /toonify leaves, and each one running takes CPU from the next /toonify
        (docs/jobs.md)."""
        processing = self.gateway.processing
        toonify_in_flight = processing.total - processing.held[QUEUE_CLIENT]
        limit = min(self.settings.queue_max_running, 1 if toonify_in_flight else 2**31)
        return (
            not shutdown.STOPPING.is_set()
            and len(self._running) < limit
            and processing.total < self.gateway.ladder.full_bound
        )

    async def _run_jobs(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.store.maintain()
                while self._may_start_a_job() and (claim := await self.store.claim()):
                    self.gateway.processing.take(QUEUE_CLIENT)
                    task = asyncio.create_task(self._run(claim))
                    self._running[task] = claim
                    task.add_done_callback(self._running.pop)
                count, oldest = await self.store.depth()
                metrics.queue_depth.set(count)
                metrics.queue_oldest_seconds.set(oldest)
                # Read once a round, not per status poll: every poll would scan the window.
                self.drain_rate = await self.store.drain_rate(DRAIN_WINDOW_S)
            except Exception as exc:  # a store that cannot be reached: try again next round
                logger.warning("the job loop failed a round; it goes on: %r", exc)

    async def _run(self, claim: Claim) -> None:
        job, upload = claim.job, claim.upload
        metrics.job_wait_seconds.observe(max(0.0, time.time() - job.submitted))
        renewing = asyncio.create_task(self._renew(claim))
        try:
            answer = await self._replay(upload)
        finally:
            renewing.cancel()
            self.gateway.processing.give_back(QUEUE_CLIENT)
        if answer.status in PASSING_FAILURES and claim.attempt < MAX_ATTEMPTS:
            # A part of the service was restarting or out of time: the person in line gets
            # their cartoon from a later run, not a "try again" (at most MAX_ATTEMPTS runs).
            try:
                await self.store.release(claim)
                metrics.jobs.labels("retried").inc()
            except Exception as exc:  # the store is down: the claim lapses, the job runs again
                logger.warning("job %s: not put back in line: %r", job.id, exc)
            self.wake.set()
            return
        level = dict(answer.headers).get(b"x-service-level", b"").decode() or None
        try:
            kept = await self.store.finish(claim, answer, level, self.settings.result_ttl_s)
        except Exception as exc:  # the store is down: its claim lapses and the job runs again
            logger.warning("job %s: its answer could not be stored: %r", job.id, exc)
            kept = False
        if kept:
            metrics.jobs.labels("done" if answer.status < 400 else "failed").inc()
            if upload.webhook:
                await self._tell(upload.webhook, job.id)
        else:  # deleted while it ran, or taken again after the claim lapsed: one answer only
            metrics.jobs.labels("discarded").inc()
        self.wake.set()

    async def _tell(self, url: str, job_id: str) -> None:
        try:
            ended = await self.store.get(job_id)
            if ended is not None:
                self.webhooks.send_later(url, job_id, await self.status(ended))
        except Exception as exc:  # the store went away just now: the result is there to poll
            logger.warning("job %s: no webhook: %r", job_id, exc)

    async def _renew(self, claim: Claim) -> None:
        """The claim kept while the job runs, so only a stopped instance's jobs run again."""
        every = self.settings.queue_visibility_timeout_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.store.renew(claim)
            except Exception as exc:
                logger.warning("job %s: its claim could not be renewed: %r", claim.job.id, exc)

    async def _replay(self, upload: Upload) -> Answer:
        """The upload through the service as its ``POST /toonify``, answered into memory."""
        deadline = time.time() + self.settings.request_timeout_s
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "server": ("127.0.0.1", 0),
            "client": (QUEUE_CLIENT, 0),
            "root_path": "",
            "path": upload.path.removesuffix("/raw"),
            "raw_path": upload.path.removesuffix("/raw").encode(),
            "query_string": upload.query,
            "headers": [
                (b"content-type", upload.content_type),
                (b"content-length", b"%d" % len(upload.body)),
            ],
            **self._app_scope,
        }
        started: dict = {}
        chunks: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        async def nothing_more():
            await asyncio.Event().wait()  # the client of a job never disconnects

        gateway = self.gateway
        gateway.billing.started()
        try:
            admitted = partial(RequestState, deadline, Level.full, QUEUE_CLIENT)
            answers = ErrorAnswers(gateway.app, state=admitted)
            await answers(scope, replay(upload.body, nothing_more), capture)
            return Answer(
                started.get("status", 500), list(started.get("headers", [])), b"".join(chunks)
            )
        except Exception:
            logger.exception("a job's replay failed")
            error = error_response(Exception())
            return Answer(error.status_code, list(error.raw_headers), bytes(error.body))
        finally:
            # Billed and counted as the gateway counts a /toonify answer: the fleet's cost per
            # 1000 images holds jobs too.
            status = started.get("status", 500)
            gateway.billing.finished(images=1 if status < 400 else 0)
            code = dict(started.get("headers", [])).get(b"x-error-code", b"").decode() or None
            metrics.images.labels(outcome(status, code)).inc()
            if status < 400:
                metrics.answered_images.labels(Level.full).inc()
