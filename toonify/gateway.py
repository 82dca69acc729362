"""ASGI middleware in front of the Toonify service: what HTTP needs before the typed API runs.

For ``POST /toonify``, in this order:

1. **Admission, before the body.** The degrade ladder (``levels.py``) gives each request its
   level from the requests being processed: full, reduced past ``max_in_flight``, and past the
   ladder's top (or ``max_receiving`` uploads being received) 503 ``overloaded`` with
   Retry-After; a Content-Length over the limit is 413, both before a byte of the upload is read.
2. **The body, bounded.** Uploads are read with a deadline for the whole body and one between
   chunks, and a byte limit; a slow client loses its receiving slot (408) and never holds a
   processing slot, so slow clients cannot starve the others.
3. **One form.** The photo comes as the multipart file field ``image`` or as the raw body, with
   options as form fields or query parameters. The form is checked strictly (one photo, known
   options, each once, small), options are validated by ``ToonifyOptions``, and the typed API
   gets one canonical multipart request whatever the client sent.
4. **Billing.** Every request is metered from arrival to the end of its answer (Cloud Run bills
   that time), and the meter accrues every second while the instance runs; answered images are
   counted per level.

For every request: errors leave in the documented JSON form (the router's 404 and 405, BentoML's
own errors included), and request metrics are labelled by route template, so made-up paths share
one series. Run one entry worker per instance: admission and billing are per process.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import urllib3
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from preprocess import ImageTooLarge, InputError, NotAnImage

from . import metrics
from .cost import BillingMeter, Charge, RollingCost, profile_from_env
from .errors import (
    BY_STATUS,
    BadOption,
    BadRequest,
    Internal,
    Overloaded,
    ServiceError,
    SlowUpload,
    error_body,
    error_response,
    outcome,
    status_of,
)
from .levels import Ladder, Level
from .responses import server_timing
from .schema import ToonifyOptions, describe_validation_error
from .settings import Settings

logger = logging.getLogger("toonify.gateway")

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PHOTO_FIELD = "image"
MAX_FIELDS = 16  # option fields in a multipart form
MAX_FIELD_BYTES = 1024  # one option's value
FORM_SLACK = 64 * 1024  # multipart framing and options on top of the photo's byte limit
# When the current request's answer is due (unix time): set at arrival, read by the API.
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("toonify_deadline")
# The level the current request was admitted at: set at admission, read by the API.
LEVEL: contextvars.ContextVar[Level] = contextvars.ContextVar("toonify_level")


class ClientGone(Exception):
    """The client disconnected before its upload arrived: there is nobody to answer."""


@dataclass
class Upload:
    photo: bytes
    content_type: str
    fields: list[tuple[str, str]]


@dataclass
class Answered:
    """What the gateway saw of a response: for metrics and the images outcome."""

    status: int = 500
    code: str | None = None


class Gateway:
    def __init__(
        self,
        app,
        *,
        settings: Settings,
        ladder: Callable[[], Ladder] | None = None,
        api_path: str = "/toonify",
    ) -> None:
        """``ladder`` makes the degrade ladder when the app starts in its worker (it reads the
        generator's signature); without it the instance refuses past ``max_in_flight``."""
        self.app = app
        self.settings = settings
        self.ladder = ladder() if ladder else Ladder.of(settings, generator_sizes=())
        logger.info("admission: %s", self.ladder.describe())
        self.api_path = api_path
        self.upload_limit = settings.max_bytes + FORM_SLACK
        self.receiving = 0
        self.processing = 0
        self.profile = profile_from_env()
        self.meter = BillingMeter(self.profile, settings.billed_vcpu, settings.billed_memory_gib)
        self.recent_cost = RollingCost(settings.cost_window_s)
        self._clock: asyncio.Task | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = Answered()
        send = self._in_json_form(send, answered)
        try:
            if scope["path"] == self.api_path and scope["method"] == "POST":
                await self._toonify(scope, receive, send, answered)
            else:
                await self.app(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if scope["path"] == self.api_path:
                route = self.api_path
            metrics.http_requests.labels(route, str(answered.status)).inc()
            metrics.http_request_seconds.labels(route).observe(time.perf_counter() - started)

    # --- POST /toonify ---------------------------------------------------------------------

    async def _toonify(self, scope: Scope, receive: Receive, send: Send, answered: Answered):
        arrived = time.perf_counter()
        DEADLINE.set(time.time() + self.settings.request_timeout_s)
        self.bill(self.meter.started())
        try:
            upload = await self._admit_and_read(scope, receive)
            # The level now: slots may have filled while the upload arrived.
            level = self.ladder.level_for(self.processing)
            LEVEL.set(level)
            options = self._options(upload.fields)
            del options  # validated here for a clear 400; the typed API validates them again
            body, content_type = canonical_form(upload)
            scope = forwarded_scope(scope, content_type, len(body))
            self.processing += 1
            metrics.requests_in_flight.inc()
            try:
                await self.app(scope, replay(body, receive), send)
            finally:
                self.processing -= 1
                metrics.requests_in_flight.dec()
        except ClientGone:
            answered.code = "client_gone"
        except (ServiceError, InputError) as exc:
            response = error_response(exc)
            # Server-side time of an answer the gateway gave itself (a refusal, say).
            response.headers["Server-Timing"] = server_timing(
                {"gateway": time.perf_counter() - arrived}
            )
            await response(scope, receive, send)
        finally:
            ok = answered.status < 400
            self.bill(self.meter.finished(), images=1 if ok else 0)
            if ok:
                metrics.answered_images.labels(request_level()).inc()
            if answered.code != "client_gone":
                metrics.images.labels(outcome(answered.status, answered.code)).inc()

    async def _admit_and_read(self, scope: Scope, receive: Receive) -> Upload:
        self.ladder.level_for(self.processing)  # refused before the body past the ladder's top
        if self.receiving >= self.settings.max_receiving:
            raise Overloaded(
                f"Too many uploads are arriving at once; retry in {self.settings.retry_after_s} s.",
                retry_after=self.settings.retry_after_s,
            )
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.upload_limit:
            raise ImageTooLarge(self._too_large(int(declared)))
        self.receiving += 1
        try:
            body = await read_body(receive, self.upload_limit, self.settings, self._too_large)
        finally:
            self.receiving -= 1
        query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
        return await parse_upload(headers.get("content-type", ""), body, query)

    def _too_large(self, size: int) -> str:
        return (
            f"The upload is {size / 1e6:.1f} MB; the limit is {self.settings.max_bytes / 1e6:.0f}"
            " MB. Send a smaller or more compressed photo."
        )

    @staticmethod
    def _options(fields: list[tuple[str, str]]) -> ToonifyOptions:
        names = [name for name, _ in fields]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise BadOption(f"Each option once, please: {', '.join(repeated)} given twice.")
        try:
            return ToonifyOptions.from_fields(dict(fields))
        except ValidationError as exc:
            raise BadOption(describe_validation_error(exc)) from None

    # --- billing -------------------------------------------------------------------------------

    def bill(self, charge: Charge, images: int = 0) -> None:
        name = self.profile.name
        metrics.billed_seconds.labels(name).inc(charge.seconds)
        metrics.billed_usd.labels(name).inc(charge.usd)
        self.recent_cost.add(charge.usd, images)
        metrics.cost_per_1000_images_usd.labels(name).set(self.recent_cost.per_1000_images())

    def _lifespan(self, receive: Receive) -> Receive:
        """Start the billing clock with the app and stop it with the app."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(1.0)
                self.bill(self.meter.tick())

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._clock = asyncio.create_task(tick())
            elif message["type"] == "lifespan.shutdown" and self._clock is not None:
                self._clock.cancel()
            return message

        return wrapped

    # --- every response ------------------------------------------------------------------------

    @staticmethod
    def _in_json_form(send: Send, answered: Answered) -> Send:
        """A send that records the status and rewrites any error not in the documented form."""
        held: Message | None = None
        chunks: list[bytes] = []

        async def wrapped(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                answered.status = message["status"]
                if message["status"] >= 400:
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body, headers, answered.code = in_json_form(
                    held["status"], b"".join(chunks), held.get("headers", [])
                )
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        return wrapped


RATE_GRACE_S = 3.0  # a connection's first seconds are not held to the minimum rate


async def read_body(
    receive: Receive, limit: int, settings: Settings, too_large: Callable[[int], str]
) -> bytes:
    """The request body within ``limit`` bytes, the body deadlines and the minimum average
    rate (a client trickling bytes is cut off in seconds, not minutes); ClientGone if the client
    disconnects."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + settings.body_timeout_s
    chunks: list[bytes] = []
    size = 0
    while True:
        now = loop.time()
        elapsed = now - started
        wait = min(settings.body_idle_timeout_s, deadline - now)
        if elapsed > RATE_GRACE_S and size / elapsed < settings.body_min_rate:
            wait = 0  # too slow on average: the same answer as a stall
        try:
            if wait <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(receive(), wait)
        except TimeoutError:
            raise SlowUpload(
                f"The upload arrived too slowly (limits: {settings.body_timeout_s:.0f} s in all, "
                f"pauses of {settings.body_idle_timeout_s:.0f} s, "
                f"{settings.body_min_rate / 1024:.0f} KB/s on average); send it again on a better "
                "connection."
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ImageTooLarge(too_large(size))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def parse_upload(content_type: str, body: bytes, query: list[tuple[str, str]]) -> Upload:
    """The photo and the options: multipart (one file field ``image``) or the raw body."""
    fields = list(query)
    if content_type.lower().startswith("multipart/form-data"):
        photo, photo_type, form_fields = await parse_form(content_type, body)
        fields += form_fields
    else:
        photo, photo_type = body, content_type.split(";")[0].strip()
    if not photo:
        raise NotAnImage("The upload is empty: send a photo (JPEG, PNG, HEIC, ...).")
    return Upload(photo, photo_type, fields)


async def parse_form(content_type: str, body: bytes) -> tuple[bytes, str, list[tuple[str, str]]]:
    async def stream():
        yield body

    parser = MultiPartParser(
        Headers({"content-type": content_type}), stream(),
        max_files=1, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES,
    )  # fmt: skip
    try:
        form = await parser.parse()
    except (MultiPartException, ValueError) as exc:
        raise BadRequest(
            f"The multipart form is malformed ({exc}). Send the photo as the one file field "
            f"'{PHOTO_FIELD}' and each option once as a text field."
        ) from None
    try:
        photos = [value for name, value in form.multi_items() if isinstance(value, UploadFile)]
        if len(photos) != 1 or form.getlist(PHOTO_FIELD) != photos:
            raise BadRequest(
                f"Send the photo as the multipart file field '{PHOTO_FIELD}' (a file part, not a"
                " text field or a link), or as the raw request body."
            )
        upload = photos[0]
        photo = await upload.read()
        fields = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
        return photo, upload.content_type or "", fields
    finally:
        await form.close()


def canonical_form(upload: Upload) -> tuple[bytes, str]:
    """One multipart request for the typed API: the photo as ``image`` and the options as text.

    The decoder sniffs the photo's real format from its bytes; the part's label only has to
    satisfy the typed field (``image/*``), whatever the client declared.
    """
    label = upload.content_type if upload.content_type.startswith("image/") else "image/*"
    fields: list = [(PHOTO_FIELD, ("photo", upload.photo, label)), *upload.fields]
    return urllib3.encode_multipart_formdata(fields)


def forwarded_scope(scope: Scope, content_type: str, length: int) -> Scope:
    headers = [
        (name, value) for name, value in scope["headers"]
        if name not in (b"content-type", b"content-length", b"transfer-encoding")
    ]  # fmt: skip
    headers += [(b"content-type", content_type.encode()), (b"content-length", str(length).encode())]
    return {**scope, "headers": headers}


def request_deadline(settings: Settings) -> float:
    """When the current request's answer is due (unix time), as the gateway set it at arrival."""
    return DEADLINE.get(None) or time.time() + settings.request_timeout_s


def request_level() -> Level:
    """The level the gateway admitted the current request at (full for calls it never saw)."""
    return LEVEL.get(Level.full)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over ``body`` once, then waits on the client as the real one does."""
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


def in_json_form(status: int, body: bytes, headers: list) -> tuple[bytes, list, str | None]:
    """An error response's body in the documented form, its headers, and its code."""
    parsed = _json_or_none(body)
    if isinstance(parsed, dict):
        if isinstance(parsed.get("error"), str) and isinstance(parsed.get("detail"), str):
            return body, headers, parsed["error"]
    error = BY_STATUS.get(status, Internal if status >= 500 else BadRequest)()
    if status == 400 and isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        # BentoML's own validation answer: {"error": "...", "detail": [pydantic errors]}
        error = BadOption(
            "; ".join(
                f"{'.'.join(map(str, p.get('loc', [])))}: {p.get('msg')}" for p in parsed["detail"]
            )
        )
    if status_of(error) >= 500 and status not in (503, 504):
        logger.error("answered %s from below the gateway: %r", status, body[:300])
    payload = error_body(error)
    encoded = json.dumps(payload).encode()
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
    kept += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    if error.retry_after and not any(k.lower() == b"retry-after" for k, _ in kept):
        kept.append((b"retry-after", str(error.retry_after).encode()))
    return encoded, kept, payload["error"]


def _json_or_none(body: bytes):
    try:
        return json.loads(body)
    except ValueError:
        return None
