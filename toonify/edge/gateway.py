"""ASGI middleware in front of the Toonify service: what HTTP needs before and around the body.

For an upload (``POST /toonify`` and ``POST /toonify/json``), in this order:

1. **Admission, before the body.** The degrade ladder (``levels.py``) gives each request its
   level from the requests being processed: full, reduced past ``max_in_flight``, and past the
   ladder's top (or ``max_receiving`` uploads being received) 503 ``overloaded`` with
   Retry-After; a Content-Length over the limit is 413, both before a byte of the upload is read.
2. **The body, bounded.** Uploads are read with a deadline for the whole body and one between
   chunks, and a byte limit; a slow client loses its receiving slot (408) and never holds a
   processing slot, so slow clients cannot starve the others.
3. **To its parser.** The body goes on as it came. A multipart form goes to BentoML's typed API
   as it is; any other body is the photo itself and is labelled ``RAW_PHOTO_TYPE`` so that the
   typed API parses it with the options from the query (``forms.py``: each form parsed once).
   The request's deadline and level reach the API in context variables.
4. **The answer, bounded** (``answer_budget.py``): handed over in pieces the client must take,
   within its share of the bytes waiting.
5. **Billing** (``billing.py``): every request is metered from arrival to the end of its answer
   (Cloud Run bills that time), and the meter accrues every second while the instance runs;
   answered images are counted per level.

For every request: errors leave in the documented JSON form (``error_answers.ErrorAnswers``:
what the API raised, the router's 404 and 405, BentoML's own), and request metrics are labelled
by route template, so made-up paths share one series. Run one entry worker per instance:
admission and billing are per process.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers

from preprocess import ImageTooLarge, InputError

from .. import metrics
from ..error_answers import ErrorAnswers, error_response
from ..errors import MethodNotAllowed, Overloaded, ServiceError
from ..jobs.runner import Pipeline
from ..levels import Ladder, Level
from ..request import current_request
from ..schema import ResponseKind, ToonifyOptions
from ..settings import Settings
from .answer_budget import AnswerBudget, AnswerNotTaken
from .billing import Billing
from .fairness import FairSlots, PreemptibleSlots, client_address, client_network, parse_networks
from .job_desk import JobDesk
from .responses import server_timing
from .uploads import (
    FORM_SLACK,
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    check_query,
    read_body,
    replay,
    to_its_parser,
)

logger = logging.getLogger("toonify.gateway")
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Answered:
    """What the gateway saw of a response: for metrics and the images outcome."""

    status: int = 500
    code: str | None = None

    def started(self, status: int, code: str | None) -> None:
        self.status, self.code = status, code


class Gateway:
    def __init__(
        self,
        app,
        *,
        settings: Settings,
        ladder: Callable[[], Ladder] | None = None,
        upload_paths: tuple[str, ...] = ("/toonify",),
        job_check: Callable[[bytes, ToonifyOptions], Awaitable[None]] | None = None,
        job_pipeline: Pipeline | None = None,
    ) -> None:
        """``ladder`` makes the degrade ladder when the app starts in its worker (it reads the
        generator's signature); without it the instance refuses past ``max_in_flight``. With
        ``job_pipeline`` (the call /toonify makes) the instance takes jobs; ``job_check``
        checks their photos at submission."""
        self.app = app
        self.settings = settings
        self.ladder = ladder() if ladder else Ladder.of(settings, generator_sizes=())
        logger.info("admission: %s", self.ladder.describe())
        # Each upload API, and its raw-body form at PATH/raw (the same API, parsed as raw).
        self.upload_paths = {path: path for path in upload_paths} | {
            f"{path}/raw": path for path in upload_paths
        }
        self.upload_limit = settings.max_bytes + FORM_SLACK
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        share = settings.client_share
        # Each bound held per client address; the hard limits bound the real totals.
        self.receiving = PreemptibleSlots(
            round(share * settings.max_receiving), hard_limit=2 * settings.max_receiving
        )
        self.processing = FairSlots(
            round(share * self.ladder.reduced_bound), hard_limit=2 * self.ladder.reduced_bound
        )
        self.in_flight_bytes = FairSlots(
            round(share * settings.max_in_flight_bytes), hard_limit=2 * settings.max_in_flight_bytes
        )
        self.answers = AnswerBudget(settings, self._overloaded)
        self.billing = Billing(settings)
        self.job_desk = None  # jobs (job_desk.py)
        if job_pipeline is not None:
            folder = Path(settings.queue_dir or Path(tempfile.gettempdir()) / "toonify-queue")
            self.job_desk = JobDesk(self, folder, job_pipeline, job_check)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = Answered()
        try:
            await ErrorAnswers(self._route(answered), answered.started)(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if scope["path"] in self.upload_paths:
                route = scope["path"]
            metrics.http_requests.labels(route, str(answered.status)).inc()
            metrics.http_request_seconds.labels(route).observe(time.perf_counter() - started)

    def _route(self, answered: Answered) -> ASGIApp:
        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            if self.job_desk is not None and (
                scope["path"] == "/jobs" or scope["path"].startswith("/jobs/")
            ):
                await self.job_desk(scope, receive, send)
            elif scope["path"] in self.upload_paths and scope["method"] == "POST":
                if self.job_desk is not None and (preference := self.job_desk.preference(scope)):
                    await self._put_in_line(scope, receive, send, preference)
                else:
                    await self._toonify(scope, receive, send, answered)
            elif scope["path"] in self.upload_paths:
                raise MethodNotAllowed("Upload the photo with POST.", allow=("POST",))
            else:
                await self.app(scope, receive, send)

        return route

    # --- POST /toonify ---------------------------------------------------------------------

    async def _toonify(self, scope: Scope, receive: Receive, send: Send, answered: Answered):
        arrived = time.perf_counter()
        state = current_request()  # opened by ErrorAnswers, around this
        assert state is not None
        state.deadline = time.time() + self.settings.request_timeout_s
        self.billing.started()
        client = state.client = self.client_of(scope)
        try:
            body = await self._admit_and_read(scope, receive, client)
            # The level now: slots may have filled while the upload arrived.
            state.level = self._level_for(client)
            scope = to_its_parser(scope, len(body), self.upload_paths[scope["path"]])
            size = len(body)
            if not self.in_flight_bytes.fits(client, size, self.settings.max_in_flight_bytes):
                raise self._overloaded("Too many large photos are being worked on")
            self.processing.take(client)
            self.in_flight_bytes.take(client, size)
            metrics.requests_in_flight.inc()
            try:
                answer = self.answers.bounded(scope, send, client, arrived)
                request_body = replay(body, receive)
                del body  # the replay hands it over once, and lets go of it then
                await self.app(scope, request_body, answer)
            finally:
                self.processing.give_back(client)
                self.in_flight_bytes.give_back(client, size)
                metrics.requests_in_flight.dec()
        except ClientGone:
            answered.code = "client_gone"
        except AnswerNotTaken:
            answered.code = "client_gone"  # the connection is closed: nobody to answer
        except (ServiceError, InputError) as exc:
            response = error_response(exc)
            # Server-side time of an answer the gateway gave itself (a refusal, say).
            response.headers["Server-Timing"] = server_timing(
                {"gateway": time.perf_counter() - arrived}
            )
            await response(scope, receive, send)
        finally:
            self.billing.answered(answered.status, answered.code, state.level)

    async def _put_in_line(self, scope: Scope, receive: Receive, send: Send, preference) -> None:
        """An upload to /toonify whose ``Prefer`` asks for a job: submitted as to /jobs."""
        path, api_path = scope["path"], self.upload_paths[scope["path"]]
        parse_path = "/toonify/raw" if path != api_path else "/toonify"
        kind = ResponseKind.json if api_path == "/toonify/json" else None
        await self.job_desk.submit(scope, receive, send, parse_path, preference, kind)

    def _level_for(self, client: str) -> Level:
        """The ladder's level for a request of ``client``: its own requests count in full, other
        clients' up to their share; past the hard limit everyone is refused."""
        # Past the hard limit a client with nothing in flight still has its share: many
        # addresses at their shares cannot shut everyone else out.
        slots = self.processing
        if slots.total >= slots.hard_limit + (0 if slots.held[client] else slots.share):
            raise self._overloaded("The service is at capacity")
        return self.ladder.level_for(self.processing.weight_for(client))

    def _overloaded(self, reason: str) -> Overloaded:
        retry = self.settings.retry_after_s
        return Overloaded(f"{reason}; retry in {retry} s.", retry_after=retry)

    async def _admit_and_read(self, scope: Scope, receive: Receive, client: str) -> bytes:
        check_query(scope.get("query_string", b""), self.settings)
        self._level_for(client)  # refused before the body past the ladder's top
        if not self.answers.fits(client, 1):
            raise self._overloaded("Too many answers are waiting to be taken")
        return await self.read_upload(
            scope, receive, client, self.receiving, self.settings.max_receiving
        )

    def client_of(self, scope: Scope) -> str:
        """The network a request is counted against (fairness.py)."""
        address = client_address(
            (scope.get("client") or (None,))[0],
            Headers(scope=scope).getlist("x-forwarded-for"),
            self.trusted_proxies,
        )
        settings = self.settings
        return client_network(address, settings.client_ipv4_prefix, settings.client_ipv6_prefix)

    async def read_upload(
        self, scope: Scope, receive: Receive, client: str, slots: PreemptibleSlots, bound: int
    ) -> bytes:
        """The upload's body, read within ``bound`` uploads being received (``client``'s own in
        full, the others' up to their share; past it the client with the most arriving gives
        one up), the byte limit and the body's deadlines."""
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.upload_limit:
            raise ImageTooLarge(self.too_large(int(declared)))
        if slots.full_for(client, bound) and not slots.make_room(client):
            raise self._overloaded("Too many uploads are arriving at once")
        metrics.uploads_receiving.inc()
        try:
            with slots.holding(client) as holder:
                try:
                    return await read_body(
                        receive, self.upload_limit, self.settings, self.too_large
                    )
                except asyncio.CancelledError:
                    if not holder.cut:
                        raise
                    holder.task.uncancel()
                    raise self._overloaded(
                        "Too many uploads are arriving from your network at once"
                    ) from None
        finally:
            metrics.uploads_receiving.dec()

    def too_large(self, size: int) -> str:
        return (
            f"The upload is {size / 1e6:.1f} MB; the limit is {self.settings.max_bytes / 1e6:.0f}"
            " MB. Send a smaller or more compressed photo."
        )

    def _lifespan(self, receive: Receive) -> Receive:
        """Start the billing clock and the job queue with the app, and stop them with it."""

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.billing.start_clock()
                if self.job_desk is not None:
                    self.job_desk.start()
            elif message["type"] == "lifespan.shutdown":
                self.billing.stop_clock()
                if self.job_desk is not None:
                    await self.job_desk.stop()
            return message

        return wrapped
