"""The upload as the gateway reads it and hands it on: bounded, timed, to the right parser.

Nothing here parses a photo or an option: ``read_body`` enforces the byte limit, the deadlines
and the minimum rate; ``to_its_parser`` labels the body for the typed API's parser of its form;
``replay`` hands the read body to the app below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers

from preprocess import ImageTooLarge

from ..errors import BadRequest, SlowUpload
from ..settings import Settings
from .forms import RAW_PHOTO_TYPE

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FORM_SLACK = 64 * 1024  # multipart framing and options on top of the photo's byte limit


class ClientGone(Exception):
    """The client disconnected before its upload arrived: there is nobody to answer."""


JOIN_ON_THE_LOOP = 1 << 20  # bytes: a body this large or larger is joined in a thread
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
        # Checked on a timer, not only when bytes arrive: by this time the bytes so far must have
        # come at the minimum rate (a body that sends nothing is cut off after the grace).
        rate_deadline = started + max(RATE_GRACE_S, size / settings.body_min_rate)
        wait = min(settings.body_idle_timeout_s, deadline - now, rate_deadline - now)
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
            if size < JOIN_ON_THE_LOOP:
                return b"".join(chunks)
            # A photo of megabytes is joined in a thread (bytes.join lets go of the GIL past
            # 1 MB): on the event loop it held up every other request of the instance.
            return await asyncio.to_thread(b"".join, chunks)


async def receive_nothing() -> Message:
    return {"type": "http.disconnect"}


def check_query(query: bytes, settings: Settings) -> None:
    """Bounded before anything parses it: its size and its number of parameters."""
    if len(query) > settings.max_query_bytes or query.count(b"&") >= settings.max_query_params:
        raise BadRequest(
            f"The query string is too long (at most {settings.max_query_params} options in "
            f"{settings.max_query_bytes} bytes); send each option once."
        )


def to_its_parser(scope: Scope, length: int, api_path: str) -> Scope:
    """The request as the typed API at ``api_path`` gets it: the body as it came (its length now
    known) and a media type that picks its parser: at PATH/raw, or for anything but a multipart
    form, the raw photo with the options from the query."""
    headers = Headers(scope=scope)
    content_type = headers.get("content-type", "")
    media_type, _, parameters = content_type.partition(";")
    raw = scope["path"] != api_path
    if media_type.strip().lower() == "multipart/form-data" and not raw:
        content_type = "multipart/form-data;" + parameters
    else:
        content_type = RAW_PHOTO_TYPE
    kept = [
        (name, value)
        for name, value in scope["headers"]
        if name not in (b"content-type", b"content-length", b"transfer-encoding")
    ]
    kept += [(b"content-type", content_type.encode("latin-1")), (b"content-length", b"%d" % length)]
    return {**scope, "headers": kept, "path": api_path, "raw_path": api_path.encode()}


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over ``body`` once, then waits on the client as the real one does."""
    held = [body]

    async def wrapped() -> Message:
        if held:
            return {"type": "http.request", "body": held.pop(), "more_body": False}
        return await receive()

    return wrapped
