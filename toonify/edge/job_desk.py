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

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from .. import metrics
from ..errors import Expired, MethodNotAllowed, NotFound, Overloaded
from ..jobs.model import JobStore, Upload, eta_s, is_job_id
from ..jobs.stores import open_store
from ..jobs.webhooks import WebhookSender, split_webhook
from ..schema import JobStatus, ToonifyOptions
from .billing import Billing
from .fairness import FairSlots, PreemptibleSlots
from .forms import PhotoForm, RawPhoto
from .job_runner import JobRunner
from .responses import json_answer
from .uploads import check_query, replay, to_its_parser

logger = logging.getLogger("toonify.jobs")
PENDING_RETRY_S = (2, 30)  # when to ask again for a pending result: from 2 s to 30 s


def poll_after_s(eta_s: float | None) -> int:
    """Retry-After for a pending result: a third of the ETA, within PENDING_RETRY_S, so a long
    line at a viral peak is not polled every 2 s by everyone in it."""
    shortest, longest = PENDING_RETRY_S
    return shortest if eta_s is None else int(min(longest, max(shortest, eta_s / 3)))


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
        self.runner = JobRunner(gateway, self.webhooks, self._status)
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
            settings.queue_max_jobs_per_client,
        )
        self.runner.start(self.store, lifespan_scope)

    async def stop(self) -> None:
        await self.runner.stop()
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
            await json_answer(await self._status(job))(scope, receive, send)
        else:
            await self._result(job, scope, receive, send)

    async def _submit(self, scope, receive, send) -> None:
        gateway = self.gateway
        check_query(scope.get("query_string", b""), self.settings)
        webhook, query = split_webhook(scope.get("query_string", b""))
        if webhook is not None:  # given, even empty: checked
            await self.webhooks.check(webhook)
        scope = {**scope, "query_string": query}  # what /toonify takes
        client = gateway.client_of(scope)
        body = await gateway.read_upload(
            scope, receive, client, self.receiving, self.receiving_bound
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
        job = await self.store.submit(
            Upload(api_path, query, content_type, body, webhook or "", client)
        )
        metrics.jobs.labels("submitted").inc()
        self.runner.wake.set()
        status = await self._status(job)
        headers = {"Location": status["status_url"]}
        await json_answer(status, 202, headers)(scope, receive, send)

    async def _status(self, job) -> dict:
        position = eta = None
        if job.status == "queued":
            position = await self.store.position(job)
            eta = eta_s(position, self.runner.drain_rate)
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
            retry = {"Retry-After": str(poll_after_s(status["eta_s"]))}
            pending = json_answer(status, 202, retry)
            await pending(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})
