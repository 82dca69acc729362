"""The job queue's runner, in the entry worker: it takes the next job while the instance has
capacity to spare (at most ``TOONIFY_QUEUE_MAX_RUNNING``, one while a /toonify is in flight),
keeps its claim while it runs, runs it through the pipeline ``/toonify`` calls, stores the
outcome once, and tells its webhook."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from preprocess import InputError

from .. import metrics, shutdown
from ..error_answers import release_frames
from ..errors import ServiceError
from ..levels import Level
from ..schema import ToonifiedPhoto, ToonifyOptions
from .model import Claim, JobStore, Outcome, Upload
from .webhooks import WebhookSender

logger = logging.getLogger("toonify.jobs")
# What running jobs count against in the fairness tables. Every client identity the gateway
# makes is an address, a network or "not-an-address:...", so no header can claim this one.
QUEUE_CLIENT = "queue"
# A run that failed with one of these failed for a passing reason (a part restarting, a deadline
# under load): the job goes back in line, up to MAX_ATTEMPTS runs.
PASSING_FAILURES = (502, 503, 504)
MAX_ATTEMPTS = 3
DRAIN_WINDOW_S = 300.0  # position and ETA come from the jobs finished in this window

# The call ``/toonify`` makes: the photo, its options, the deadline, the level and the client.
Pipeline = Callable[[bytes, ToonifyOptions, float, Level, str], Awaitable[ToonifiedPhoto]]


class Entry(Protocol):
    """What the runner uses of the entry it runs in: its settings, its processing slots (a job
    holds one while it runs), its ladder, and its billing (``answered`` bills and counts a run
    as it does a /toonify)."""

    settings: Any
    processing: Any
    ladder: Any
    billing: Any


class JobRunner:
    def __init__(
        self,
        gateway: Entry,
        pipeline: Pipeline,
        webhooks: WebhookSender,
        status: Callable[[Any], Awaitable[dict]],
    ) -> None:
        self.gateway = gateway
        self.pipeline = pipeline
        self.settings = gateway.settings
        self.webhooks = webhooks
        self.status = status  # a job's status as GET /jobs/{id} answers it (for its webhook)
        self.store: JobStore = None  # type: ignore[assignment]  # set by start()
        self.wake = asyncio.Event()
        self.ended = asyncio.Event()  # set (and renewed) each time this instance ends a job
        self.drain_rate = 0.0  # jobs finished per second over DRAIN_WINDOW_S, read each round
        self._loop: asyncio.Task | None = None
        self._running: dict[asyncio.Task, Claim] = {}

    def start(self, store: JobStore) -> None:
        self.store = store
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
            outcome = await self._toonify(upload)
        finally:
            renewing.cancel()
            self.gateway.processing.give_back(QUEUE_CLIENT)
        if outcome.status in PASSING_FAILURES and claim.attempt < MAX_ATTEMPTS:
            # A part of the service was restarting or out of time: the person in line gets
            # their cartoon from a later run, not a "try again" (at most MAX_ATTEMPTS runs).
            try:
                await self.store.release(claim)
                metrics.jobs.labels("retried").inc()
            except Exception as exc:  # the store is down: the claim lapses, the job runs again
                logger.warning("job %s: not put back in line: %r", job.id, exc)
            self.wake.set()
            return
        try:
            kept = await self.store.finish(claim, outcome, self.settings.result_ttl_s)
        except Exception as exc:  # the store is down: its claim lapses and the job runs again
            logger.warning("job %s: its outcome could not be stored: %r", job.id, exc)
            kept = False
        if kept:
            metrics.jobs.labels("done" if outcome.error is None else "failed").inc()
            if upload.webhook:
                await self._tell(upload.webhook, job.id)
        else:  # deleted while it ran, or taken again after the claim lapsed: one answer only
            metrics.jobs.labels("discarded").inc()
        self.wake.set()
        self.ended.set()
        self.ended = asyncio.Event()

    async def _toonify(self, upload: Upload) -> Outcome:
        """The job's photo through the pipeline ``/toonify`` calls, at the full level, billed
        and counted as a /toonify is."""
        deadline = time.time() + self.settings.request_timeout_s
        billing = self.gateway.billing
        billing.started()
        try:
            photo = await self.pipeline(
                upload.photo, upload.options, deadline, Level.full, QUEUE_CLIENT
            )
            outcome = Outcome(upload.options, photo=photo)
        except asyncio.CancelledError:  # the server stops: the job goes back in line
            billing.finished()
            raise
        except Exception as exc:
            release_frames(exc)  # its frames hold the photo
            if not isinstance(exc, ServiceError | InputError):  # a bug: logged, answered 500
                logger.error("a job's run failed", exc_info=exc)
            outcome = Outcome(upload.options, error=exc)
        billing.answered(outcome.status, outcome.error_code, outcome.level)
        return outcome

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
