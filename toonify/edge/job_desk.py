"""The job routes of the entry, and the loop that runs jobs on the capacity ``/toonify`` leaves.

    POST   /jobs, /jobs/raw   the upload as /toonify and /toonify/raw take it: 202 and the job
    GET    /jobs/{id}         queued | running | done | failed | expired, position, eta_s
    GET    /jobs/{id}/result  the answer /toonify gave it; 202 with Retry-After while pending
    DELETE /jobs/{id}         the photo and the answer deleted at once: 204

A job runs only while the instance has a free processing slot at the full level, replayed through
the service as its ``POST /toonify`` (so it is parsed, limited, toonified and answered exactly as
one), and counts against that slot while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import metrics, shutdown
from ..error_answers import ErrorAnswers, error_response
from ..errors import Expired, MethodNotAllowed, NotFound, Overloaded, outcome
from ..levels import Level
from ..request import RequestState
from ..schema import JobStatus, ToonifyOptions
from .billing import Billing
from .fairness import FairSlots, PreemptibleSlots
from .forms import PhotoForm, RawPhoto
from .jobs import Answer, Claim, JobStore, Upload, eta_s, is_job_id, open_store
from .uploads import check_query, replay, to_its_parser
from .webhooks import WebhookSender, split_webhook

logger = logging.getLogger("toonify.jobs")
QUEUE_CLIENT = "queue"  # what running jobs count against in the fairness tables
PENDING_RETRY_S = (2, 30)  # when to ask again for a pending result: from 2 s to 30 s


def poll_after_s(eta_s: float | None) -> int:
    """Retry-After for a pending result: a third of the ETA, within PENDING_RETRY_S, so a long
    line at a viral peak is not polled every 2 s by everyone in it."""
    shortest, longest = PENDING_RETRY_S
    return shortest if eta_s is None else int(min(longest, max(shortest, eta_s / 3)))


# A run answered with one of these failed for a passing reason (a part restarting, a deadline
# under load): the job goes back in line, up to MAX_ATTEMPTS runs.
PASSING_FAILURES = (502, 503, 504)
MAX_ATTEMPTS = 3
DRAIN_WINDOW_S = 300.0  # position and ETA come from the jobs finished in this window


def not_allowed(methods: tuple[str, ...]) -> MethodNotAllowed:
    """405, with the Allow header HTTP requires."""
    return MethodNotAllowed(f"This path takes {' and '.join(methods)}.", allow=methods)


class Entry(Protocol):
    """What the job desk uses of the gateway it sits in: its bounds, its billing, the app below."""

    app: Any
    settings: Any
    ladder: Any
    processing: FairSlots
    billing: Billing

    def client_of(self, scope: dict) -> str: ...

    async def read_upload(
        self, scope: dict, receive: Any, client: str, slots: PreemptibleSlots, bound: int
    ) -> bytes: ...


class JobDesk:
    def __init__(
        self,
        gateway: Entry,
        folder: Path,
        input_spec: Callable[[], type],
        check_photo: Callable[[bytes, ToonifyOptions], Awaitable[None]] | None = None,
    ) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.folder = folder
        self.input_spec = input_spec  # the typed API's input model, to check a submission
        self.check_photo = check_photo  # and its photo's header (by the preprocessing worker)
        self.webhooks = WebhookSender(self.settings)
        self.store: JobStore | None = None
        self.wake = asyncio.Event()
        self._loop: asyncio.Task | None = None
        self._running: dict[asyncio.Task, Claim] = {}
        self._app_scope: dict = {}
        self.drain_rate = 0.0  # jobs finished per second over DRAIN_WINDOW_S, read each round
        # Submissions are received within their own bound: a queue is for when the processing
        # bounds (from which max_receiving follows) are full.
        self.receiving_bound = max(self.settings.max_receiving, 64)
        self.receiving = PreemptibleSlots(
            round(self.settings.client_share * self.receiving_bound), 2 * self.receiving_bound
        )

    # --- lifespan ----------------------------------------------------------------------------

    def start(self, lifespan_scope: dict) -> None:
        settings = self.settings
        self.store = open_store(
            str(settings.queue_url or ""),
            self.folder,
            settings.queue_max_jobs,
            settings.queue_max_bytes,
            settings.queue_visibility_timeout_s,
        )
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
        await self.webhooks.close()
        if self.store is not None:
            await self.store.close()

    # --- routes ------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        path, method = scope["path"], scope["method"]
        if path in ("/jobs", "/jobs/raw"):
            if method != "POST":
                raise not_allowed(("POST",))
            await self._submit(scope, receive, send)
            return
        job_id, _, tail = path.removeprefix("/jobs/").partition("/")
        if tail not in ("", "result"):
            raise NotFound()
        allowed = ("GET", "DELETE") if tail == "" else ("GET",)
        if method not in allowed:
            raise not_allowed(allowed)
        job = await self.store.get(job_id) if self.store and is_job_id(job_id) else None
        if job is None:
            raise NotFound("No such job: the id is wrong, or the job was deleted.")
        if method == "DELETE":
            await self.store.delete(job_id)
            await Response(status_code=204)(scope, receive, send)
        elif tail == "":
            await JSONResponse(await self._status(job))(scope, receive, send)
        else:
            await self._result(job, scope, receive, send)

    async def _submit(self, scope, receive, send) -> None:
        gateway = self.gateway
        check_query(scope.get("query_string", b""), self.settings)
        webhook, query = split_webhook(scope.get("query_string", b""))
        if webhook is not None:  # given, even empty: checked
            await self.webhooks.check(webhook)
        scope = {**scope, "query_string": query}  # what /toonify takes
        body = await gateway.read_upload(
            scope, receive, gateway.client_of(scope), self.receiving, self.receiving_bound
        )
        api_path = "/toonify/raw" if scope["path"] == "/jobs/raw" else "/toonify"
        parse_scope = to_its_parser({**scope, "path": api_path}, len(body), "/toonify")
        content_type = Headers(scope=parse_scope).get("content-type", "").encode("latin-1")
        # Checked now as /toonify checks it: a job that would be refused is refused at once.
        parser = PhotoForm() if content_type.startswith(b"multipart/") else RawPhoto()
        parsed = await parser.parse_request(
            Request(parse_scope, replay(body, receive)), self.input_spec()
        )
        if self.check_photo is not None:
            options = ToonifyOptions(
                **{name: getattr(parsed, name) for name in ToonifyOptions.model_fields}
            )
            await self.check_photo(parsed.image.read_bytes(), options)
        if self.store is None:
            raise Overloaded("The job queue is starting; retry in a few seconds.")
        job = await self.store.submit(Upload(api_path, query, content_type, body, webhook or ""))
        metrics.jobs.labels("submitted").inc()
        self.wake.set()
        status = await self._status(job)
        headers = {"Location": status["status_url"]}
        await JSONResponse(status, status_code=202, headers=headers)(scope, receive, send)

    async def _status(self, job) -> dict:
        position = eta = None
        if job.status == "queued":
            position = await self.store.position(job)
            eta = eta_s(position, self.drain_rate)
        return JobStatus(
            id=job.id,
            status=job.status,
            position=position,
            eta_s=eta,
            level=job.level,
            error=job.error,
            status_url=f"/jobs/{job.id}",
            result_url=f"/jobs/{job.id}/result",
        ).model_dump()

    async def _result(self, job, scope, receive, send) -> None:
        if job.status == "expired":
            raise Expired()
        answer = await self.store.answer(job.id)
        if answer is None:  # queued or running
            status = await self._status(job)
            pending = JSONResponse(
                status, status_code=202, headers={"Retry-After": str(poll_after_s(status["eta_s"]))}
            )
            await pending(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})

    # --- running jobs ------------------------------------------------------------------------

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
                self.webhooks.send_later(url, job_id, await self._status(ended))
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
