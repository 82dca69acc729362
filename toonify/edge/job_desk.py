"""The job routes of the entry, and ``Prefer`` on ``/toonify``: a photo put in line.

    POST   /jobs, /jobs/raw   the upload as /toonify and /toonify/raw take it: 202 and the job
    POST   /toonify[/raw]     with ``Prefer: respond-async``: the same 202; with ``Prefer: wait=N``
                              the answer if it is ready within N seconds, else the 202 (RFC 7240)
    GET    /jobs/{id}         queued | running | done | failed | expired, position, eta_s
    GET    /jobs/{id}/result  the answer /toonify gives, by the same code; 202 while pending
    DELETE /jobs/{id}         the photo and the answer deleted at once: 204

A submission is parsed and checked once, as /toonify's upload is; the store keeps the photo and
its options, and the runner (toonify/jobs/runner.py) runs them through the pipeline /toonify
calls, on the capacity /toonify leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from .. import metrics
from ..errors import Expired, MethodNotAllowed, NotFound, Overloaded
from ..jobs.model import Job, JobStore, Upload, eta_s, is_job_id
from ..jobs.runner import JobRunner, Pipeline
from ..jobs.stores import open_store
from ..jobs.webhooks import WebhookSender, split_webhook
from ..schema import JobStatus, ResponseKind, ToonifyOptions, decode_query_value
from .billing import Billing
from .fairness import FairSlots, PreemptibleSlots
from .forms import read_photo_form, upload_options
from .responses import answer_response, json_answer
from .uploads import check_query, replay, to_its_parser

logger = logging.getLogger("toonify.jobs")
PENDING_RETRY_S = (2, 30)  # when to ask again for a pending result: from 2 s to 30 s
ENDED = ("done", "failed", "expired")


def poll_after_s(eta_s: float | None) -> int:
    """Retry-After for a pending result: a third of the ETA, within PENDING_RETRY_S, so a long
    line at a viral peak is not polled every 2 s by everyone in it."""
    shortest, longest = PENDING_RETRY_S
    return shortest if eta_s is None else int(min(longest, max(shortest, eta_s / 3)))


def not_allowed(methods: tuple[str, ...]) -> MethodNotAllowed:
    """405, with the Allow header HTTP requires."""
    return MethodNotAllowed(f"This path takes {' and '.join(methods)}.", allow=methods)


@dataclass(frozen=True)
class Preference:
    """What a ``Prefer`` header (RFC 7240) asks of ``POST /toonify``: an answer at once as a job
    (``respond_async``), and how long to wait for the image first (``wait_s``)."""

    respond_async: bool = False
    wait_s: int | None = None

    @classmethod
    def of(cls, values: list[str], longest_wait_s: int) -> Preference | None:
        """The preferences understood in ``values``, None where none is; any other preference,
        or a value that is no number of seconds, is ignored as RFC 7240 says."""
        respond_async, wait_s = False, None
        for value in values:
            for preference in value.split(","):
                name, _, token = preference.split(";")[0].partition("=")
                name, token = name.strip().lower(), token.strip().strip('"')
                if name == "respond-async":
                    respond_async = True
                elif name == "wait" and token.isdigit() and wait_s is None:
                    wait_s = min(int(token), longest_wait_s)
        return cls(respond_async, wait_s) if respond_async or wait_s is not None else None

    def applied(self, waited: bool, pending: bool) -> str:
        """The ``Preference-Applied`` header of an answer."""
        honoured = ["respond-async"] if self.respond_async and pending else []
        return ", ".join([*honoured, *([f"wait={self.wait_s}"] if waited else [])])


class Entry(Protocol):
    """What the job desk uses of the gateway it sits in: its bounds, its billing."""

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
        pipeline: Pipeline,
        check_photo: Callable[[bytes, ToonifyOptions], Awaitable[None]] | None = None,
    ) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.folder = folder
        self.check_photo = check_photo  # and its photo's header (by the preprocessing worker)
        self.webhooks = WebhookSender(self.settings)
        self.store: JobStore | None = None
        self.runner = JobRunner(gateway, pipeline, self.webhooks, self._status)
        # Submissions are received within their own bound: a queue is for when the processing
        # bounds (from which max_receiving follows) are full.
        self.receiving_bound = max(self.settings.max_receiving, 64)
        self.receiving = PreemptibleSlots(
            round(self.settings.client_share * self.receiving_bound), 2 * self.receiving_bound
        )

    # --- lifespan ----------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        self.store = open_store(
            str(settings.queue_url or ""),
            self.folder,
            settings.queue_max_jobs,
            settings.queue_max_bytes,
            settings.queue_visibility_timeout_s,
            settings.queue_max_jobs_per_client,
        )
        self.runner.start(self.store)

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
            raw = scope["path"] == "/jobs/raw"
            await self.submit(scope, receive, send, "/toonify/raw" if raw else "/toonify")
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

    def preference(self, scope: dict) -> Preference | None:
        """What the request's ``Prefer`` header asks of an upload to /toonify (None: nothing)."""
        longest = int(self.settings.request_timeout_s)
        return Preference.of(Headers(scope=scope).getlist("prefer"), longest)

    async def submit(
        self,
        scope: dict,
        receive: Any,
        send: Any,
        parse_path: str,
        preference: Preference | None = None,
        response: ResponseKind | None = None,
    ) -> None:
        """An upload put in line: parsed at ``parse_path`` (/toonify's form, or its raw body) and
        checked as /toonify checks it, then 202 with the job; with ``preference.wait_s``, the
        answer itself if the job ends by then. ``response``: the answer's kind, where the route
        decides it (/toonify/json)."""
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
        # Parsed and refused as /toonify's upload is, the photo kept as the bytes it came as.
        parse_scope = to_its_parser({**scope, "path": parse_path}, len(body), "/toonify")
        if Headers(scope=parse_scope).get("content-type", "").startswith("multipart/"):
            photo, fields = await read_photo_form(Request(parse_scope, replay(body, receive)))
            options = upload_options(photo, fields)
        else:
            photo, fields = body, Request(scope).query_params.multi_items()
            options = upload_options(photo, fields, decode_query_value)
        del body
        if response is not None:
            options = options.model_copy(update={"response": response})
        if self.check_photo is not None:  # as /toonify checks it: refused now, not later
            await self.check_photo(photo, options)
        if self.store is None:
            raise Overloaded("The job queue is starting; retry in a few seconds.")
        job = await self.store.submit(Upload(photo, options, webhook or "", client))
        del photo
        metrics.jobs.labels("submitted").inc()
        self.runner.wake.set()
        waited = preference is not None and preference.wait_s is not None
        if waited:
            job = await self._ended(job, preference.wait_s)
        headers = {}
        if preference is not None:
            headers["Preference-Applied"] = preference.applied(waited, job.status not in ENDED)
        if job.status in ENDED:
            await self._result(job, scope, receive, send, headers)
            return
        status = await self._status(job)
        headers |= {"Location": status["status_url"]}
        await json_answer(status, 202, {k: v for k, v in headers.items() if v})(
            scope, receive, send
        )

    async def _ended(self, job: Job, seconds: float) -> Job:
        """The job once it ends, or as it is after ``seconds``."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + seconds
        while job.status not in ENDED and (left := ends - loop.time()) > 0:
            try:  # woken when this instance ends a job; another instance's, by the poll
                await asyncio.wait_for(self.runner.ended.wait(), min(left, 0.5))
            except TimeoutError:
                pass
            job = await self.store.get(job.id) or job
        return job

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

    async def _result(self, job, scope, receive, send, headers: dict | None = None) -> None:
        if job.status == "expired":
            raise Expired()
        outcome = await self.store.outcome(job.id)
        if outcome is None:  # queued or running
            status = await self._status(job)
            retry = {"Retry-After": str(poll_after_s(status["eta_s"]))}
            await json_answer(status, 202, retry)(scope, receive, send)
            return
        if outcome.error is not None:
            raise outcome.error  # answered as /toonify answers it (error_answers.py)
        response = answer_response(outcome.photo, outcome.options)
        response.headers.update({k: v for k, v in (headers or {}).items() if v})
        await response(scope, receive, send)
