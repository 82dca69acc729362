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
from pathlib import Path
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import metrics
from ..errors import (
    ErrorAnswers,
    Expired,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    error_response,
)
from ..levels import Level
from ..schema import JobStatus
from .context import CLIENT, DEADLINE, LEVEL
from .fairness import FairSlots
from .forms import PhotoForm, RawPhoto, photos_in_memory
from .jobs import Answer, DrainRate, JobStore, Upload, is_job_id
from .uploads import check_query, replay, to_its_parser

logger = logging.getLogger("toonify.jobs")
QUEUE_CLIENT = "queue"  # what running jobs count against in the fairness tables
PENDING_RETRY_S = 2


def not_allowed(methods: tuple[str, ...]) -> Response:
    """405 in the documented form, with the Allow header HTTP requires."""
    refusal = error_response(MethodNotAllowed(f"This path takes {' and '.join(methods)}."))
    refusal.headers["Allow"] = ", ".join(methods)
    return refusal


class Entry(Protocol):
    """What the job desk uses of the gateway it sits in: its bounds, its billing, the app below."""

    app: Any
    settings: Any
    ladder: Any
    processing: FairSlots
    meter: Any

    def bill(self, charge: Any, images: int = 0) -> None: ...

    def client_of(self, scope: dict) -> str: ...

    async def read_upload(
        self, scope: dict, receive: Any, client: str, slots: FairSlots, bound: int
    ) -> bytes: ...


class JobDesk:
    def __init__(self, gateway: Entry, folder: Path, input_spec) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.folder = folder
        self.input_spec = input_spec  # the typed API's input model, to check a submission
        self.store: JobStore | None = None
        self.drain = DrainRate()
        self.wake = asyncio.Event()
        self._loop: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._app_scope: dict = {}
        # Submissions are received within their own bound: a queue is for when the processing
        # bounds (from which max_receiving follows) are full.
        self.receiving_bound = max(self.settings.max_receiving, 64)
        self.receiving = FairSlots(
            round(self.settings.client_share * self.receiving_bound), 2 * self.receiving_bound
        )

    # --- lifespan ----------------------------------------------------------------------------

    def start(self, lifespan_scope: dict) -> None:
        self.store = JobStore(
            self.folder, self.settings.queue_max_jobs, self.settings.queue_max_bytes
        )
        self._app_scope = {k: lifespan_scope[k] for k in ("app", "state") if k in lifespan_scope}
        self._loop = asyncio.create_task(self._run_jobs())

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()

    # --- routes ------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        path, method = scope["path"], scope["method"]
        if path in ("/jobs", "/jobs/raw"):
            if method != "POST":
                await not_allowed(("POST",))(scope, receive, send)
                return
            await self._submit(scope, receive, send)
            return
        job_id, _, tail = path.removeprefix("/jobs/").partition("/")
        if tail not in ("", "result"):
            raise NotFound()
        allowed = ("GET", "DELETE") if tail == "" else ("GET",)
        if method not in allowed:
            await not_allowed(allowed)(scope, receive, send)
            return
        if self.store is None or not is_job_id(job_id) or (job := self.store.get(job_id)) is None:
            raise NotFound("No such job: the id is wrong, or the job was deleted.")
        if method == "DELETE":
            self.store.delete(job_id)
            await Response(status_code=204)(scope, receive, send)
        elif tail == "":
            await JSONResponse(self._status(job))(scope, receive, send)
        else:
            await self._result(job, scope, receive, send)

    async def _submit(self, scope, receive, send) -> None:
        gateway = self.gateway
        check_query(scope.get("query_string", b""), self.settings)
        body = await gateway.read_upload(
            scope, receive, gateway.client_of(scope), self.receiving, self.receiving_bound
        )
        api_path = "/toonify/raw" if scope["path"] == "/jobs/raw" else "/toonify"
        parse_scope = to_its_parser({**scope, "path": api_path}, len(body), "/toonify")
        content_type = Headers(scope=parse_scope).get("content-type", "").encode("latin-1")
        # Checked now as /toonify checks it: a job that would be refused is refused at once.
        parser = PhotoForm() if content_type.startswith(b"multipart/") else RawPhoto()
        with photos_in_memory():
            await parser.parse_request(
                Request(parse_scope, replay(body, receive)), self.input_spec()
            )
        if self.store is None:
            raise Overloaded("The job queue is starting; retry in a few seconds.")
        job = self.store.submit(
            Upload(api_path, scope.get("query_string", b""), content_type, body)
        )
        metrics.jobs.labels("submitted").inc()
        self.wake.set()
        status = self._status(job)
        headers = {"Location": status["status_url"]}
        await JSONResponse(status, status_code=202, headers=headers)(scope, receive, send)

    def _status(self, job) -> dict:
        position = self.store.position(job) if job.status == "queued" else None
        eta = self.drain.eta_s(position, time.time()) if position is not None else None
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
        answer = self.store.answer(job.id)
        if answer is None:  # queued or running
            pending = JSONResponse(
                self._status(job), status_code=202, headers={"Retry-After": str(PENDING_RETRY_S)}
            )
            await pending(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})

    # --- running jobs ------------------------------------------------------------------------

    def _has_full_slot(self) -> bool:
        return self.gateway.processing.total < self.gateway.ladder.full_bound

    async def _run_jobs(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                self.store.expire()
                while self._has_full_slot() and (claimed := self.store.claim()):
                    job, upload = claimed
                    self.gateway.processing.take(QUEUE_CLIENT)
                    task = asyncio.create_task(self._run(job, upload))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                count, oldest = self.store.depth()
                metrics.queue_depth.set(count)
                metrics.queue_oldest_seconds.set(oldest)
            except Exception:
                logger.exception("the job loop failed a round; it goes on")

    async def _run(self, job, upload: Upload) -> None:
        metrics.job_wait_seconds.observe(time.time() - job.submitted)
        DEADLINE.set(time.time() + self.settings.request_timeout_s)
        LEVEL.set(Level.full)
        CLIENT.set(QUEUE_CLIENT)
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
        gateway.bill(gateway.meter.started())
        try:
            with photos_in_memory():
                await ErrorAnswers(self.gateway.app)(
                    scope, replay(upload.body, nothing_more), capture
                )
            answer = Answer(
                started.get("status", 500), list(started.get("headers", [])), b"".join(chunks)
            )
        except Exception:
            logger.exception("job %s failed", job.id)
            error = error_response(Exception())
            answer = Answer(error.status_code, list(error.raw_headers), bytes(error.body))
        finally:
            gateway.processing.give_back(QUEUE_CLIENT)
            gateway.bill(
                gateway.meter.finished(), images=1 if started.get("status", 500) < 400 else 0
            )
        level = dict(answer.headers).get(b"x-service-level", b"").decode() or None
        if self.store.get(job.id) is not None:  # not deleted while it ran
            self.store.finish(job.id, answer, level, self.settings.result_ttl_s)
        metrics.jobs.labels("done" if answer.status < 400 else "failed").inc()
        self.drain.add(time.time())
        self.wake.set()
