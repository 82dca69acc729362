"""Every failure a request can meet: one class per failure, one HTTP status each, one JSON form.

Mistakes in an upload are raised by ``preprocess`` (which knows nothing of HTTP); their statuses
are in ``INPUT_STATUS``. The service's own failures are ``ServiceError`` subclasses that carry
their status. 5xx is only for our side, and a 503 always says when to retry. Every error body is
``{"error": CODE, "detail": "what to do"}`` (``num_faces`` too with ``no_face``).

The services raise; ``ErrorAnswers``, the outermost middleware of every service, answers. BentoML
catches what an API raises and answers a bare 500 itself, so what our code raises during a request
is recorded on the way out (``@answered_errors`` on each API, ``record`` in the request parsers)
and ``ErrorAnswers`` puts the documented answer in place of BentoML's. A caller in the same
process (a test, a script) gets the exception itself.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import ClassVar, ParamSpec, TypeVar

from starlette.responses import JSONResponse

from preprocess import (
    CorruptImage,
    ImageTooLarge,
    InputError,
    NoFaceFound,
    NotAnImage,
    UnsupportedFormat,
)

INPUT_STATUS: dict[type[InputError], int] = {
    NotAnImage: 400,
    CorruptImage: 400,
    ImageTooLarge: 413,
    UnsupportedFormat: 415,
    NoFaceFound: 422,
}


class ServiceError(Exception):
    """A failure the service reports with its own status."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    default_retry_after: ClassVar[int | None] = None  # seconds, for 503 and 504
    default_detail: ClassVar[str] = "Something went wrong on our side; it is logged."

    def __init__(self, detail: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(detail or self.default_detail)
        self.retry_after = retry_after or self.default_retry_after


class Internal(ServiceError):
    """Our bug: logged with its traceback, never reported as 'try again'."""


class BadOption(ServiceError):
    code, status = "bad_option", 400


class BadRequest(ServiceError):
    """The request itself is malformed (the multipart form, say), not the photo."""

    code, status = "bad_request", 400


class SlowUpload(ServiceError):
    code, status = "slow_upload", 408
    default_detail = "The upload arrived too slowly; send it again on a better connection."


class OutputTooLarge(ServiceError):
    code, status = "output_too_large", 413


class NotFound(ServiceError):
    code, status = "not_found", 404
    default_detail = "No such path. The API is POST /toonify; /docs describes it."


class MethodNotAllowed(ServiceError):
    code, status = "method_not_allowed", 405
    default_detail = "This path does not take that method; /docs lists what each path takes."


class Overloaded(ServiceError):
    code, status, default_retry_after = "overloaded", 503, 2
    default_detail = "The service is at capacity; try again in a few seconds."


class Unavailable(ServiceError):
    """A part of the service failed or is restarting; the request may be sent again."""

    code, status, default_retry_after = "unavailable", 503, 5
    default_detail = "Part of the service is restarting; try again in a few seconds."


class GeneratorUnavailable(Unavailable):
    code = "generator_unavailable"
    default_detail = "The toon generator is unavailable; try again in a few seconds."


class NotReady(Unavailable):
    code = "not_ready"
    default_detail = "The service is starting or stopping; try again in a few seconds."


class Timeout(ServiceError):
    code, status, default_retry_after = "timeout", 504, 5
    default_detail = "The request ran out of time on our side; try again in a few seconds."


class QueueFull(ServiceError):
    code, status, default_retry_after = "queue_full", 503, 30
    default_detail = "The queue of jobs is full; try again in half a minute."


class Expired(ServiceError):
    code, status = "expired", 410
    default_detail = "This job's result was deleted after its retention time; submit it again."


SERVICE_ERRORS: tuple[type[ServiceError], ...] = (
    Internal,
    BadOption,
    BadRequest,
    SlowUpload,
    OutputTooLarge,
    NotFound,
    MethodNotAllowed,
    Overloaded,
    Unavailable,
    GeneratorUnavailable,
    NotReady,
    Timeout,
    QueueFull,
    Expired,
)
BY_CODE: dict[str, type[Exception]] = {
    **{error.code: error for error in INPUT_STATUS},
    **{error.code: error for error in SERVICE_ERRORS},
}
# Errors that come from elsewhere (the router, BentoML) get the code of their status.
BY_STATUS: dict[int, type[ServiceError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    408: SlowUpload,
    410: Expired,
    413: OutputTooLarge,
    500: Internal,
    503: NotReady,
    504: Timeout,
}


def status_of(error: BaseException) -> int:
    if isinstance(error, ServiceError):
        return error.status
    if isinstance(error, InputError):
        return INPUT_STATUS.get(type(error), 400)
    return 500


def error_body(error: BaseException) -> dict:
    if not isinstance(error, ServiceError | InputError):
        error = Internal()
    body: dict = {"error": error.code, "detail": str(error)}
    if isinstance(error, NoFaceFound):
        body["num_faces"] = error.num_faces
    return body


def error_response(error: BaseException) -> JSONResponse:
    """The documented answer to ``error``; its ``X-Error-Code`` header marks it as ours."""
    body = error_body(error)
    headers = {"X-Error-Code": body["error"]}
    if retry_after := getattr(error, "retry_after", None):
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body, status_code=status_of(error), headers=headers)


def error_from_body(status: int, text: str) -> Exception:
    """The exception another service answered with, rebuilt from its JSON body; a 5xx that is
    not ours (BentoML's own, a crash) becomes Unavailable or Internal by its status."""
    try:
        body = json.loads(text)
        kind = BY_CODE[body["error"]]
        detail = body["detail"]
    except (ValueError, KeyError, TypeError):
        if status == 503:
            return Unavailable()
        return BY_STATUS.get(status, Internal)() if status < 500 else Internal()
    if kind is NoFaceFound:
        return NoFaceFound(detail, num_faces=int(body.get("num_faces") or 0))
    return kind(detail)


def outcome(status: int, code: str | None) -> str:
    """The label of ``toonify_images_total`` for a request answered with this status and code."""
    if status < 400:
        return "ok"
    if code == NoFaceFound.code:
        return "no_face"
    if code in (ImageTooLarge.code, OutputTooLarge.code):
        return "too_large"
    if code == Overloaded.code:
        return "rejected"
    return "bad_input" if status < 500 else "error"


# --- raised in a service, answered at its edge -----------------------------------------------

logger = logging.getLogger("toonify.errors")
P = ParamSpec("P")
R = TypeVar("R")


class Raised:
    """What the current request raised, for ``ErrorAnswers`` to answer."""

    error: BaseException | None = None


_RAISED: contextvars.ContextVar[Raised] = contextvars.ContextVar("toonify_raised")


def record(error: BaseException) -> BaseException:
    """Keep ``error`` for the request being answered (a no-op outside a request); returns it,
    so a raise site reads ``raise record(NotAnImage(...))``."""
    raised = _RAISED.get(None)
    if raised is not None and raised.error is None:
        raised.error = error
    return error


def answered_errors(api: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """For a ``@bentoml.api`` coroutine: whatever it raises is answered in the documented form
    by ``ErrorAnswers``; the exception still propagates (BentoML and in-process callers see it)."""

    @functools.wraps(api)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await api(*args, **kwargs)
        except BaseException as exc:  # a cancellation's frames hold the photo too
            if isinstance(exc, Exception):
                record(exc)
            release_frames(exc)
            raise

    return wrapped


def release_frames(error: BaseException) -> None:
    """Let go of what the finished frames of ``error``'s tracebacks hold (a photo's decoded
    pixels, its upload, its crops), keeping the traceback's lines for the log.

    An exception that crossed ``anyio.to_thread`` sits in a reference cycle (its traceback holds
    the awaiting frame, whose future holds the exception), which only Python's slowest garbage
    collection frees: every photo without a face kept its pixels (12-190 MB each) until then.
    """
    seen: set[int] = set()
    chained: list[BaseException | None] = [error]
    while chained:
        each = chained.pop()
        if each is not None and id(each) not in seen:
            seen.add(id(each))
            traceback.clear_frames(each.__traceback__)
            chained += [each.__cause__, each.__context__]


def is_users_error(error: BaseException) -> bool:
    """A failure the request caused (4xx), as opposed to our own."""
    return isinstance(error, ServiceError | InputError) and status_of(error) < 500


class ErrorAnswers:
    """ASGI middleware, outermost in every service: the one place an exception becomes an answer.

    A request whose handler raised (recorded as above) gets ``error_response`` of that exception
    in place of BentoML's generic 500. Any other error response that is not ours (the router's
    404 and 405, BentoML's own refusals) is answered in the same form by its status.
    ``on_start(status, code)`` sees every answer's status and error code.
    """

    def __init__(self, app, on_start: Callable[[int, str | None], None] | None = None) -> None:
        self.app = app
        self.on_start = on_start

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raised = Raised()
        token = _RAISED.set(raised)
        started = []
        answering = self._answering(scope, receive, send, raised)

        async def watched(message) -> None:
            if message["type"] == "http.response.start":
                started.append(True)
            await answering(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # raised outside an API (a page, a middleware): answered too
            if started:
                raise
            if not is_users_error(exc):
                logger.exception("unexpected error answering %s", scope.get("path"))
            raised.error = raised.error or exc
            await answering({"type": "http.response.start", "status": 500, "headers": []})
        finally:
            _RAISED.reset(token)
            raised.error = None  # contexts copied during the request may outlive it

    def _answering(self, scope, receive, send, raised: Raised):
        replaced = False

        async def wrapped(message) -> None:
            nonlocal replaced
            if replaced:
                return  # the body of the response we replaced
            if message["type"] == "http.response.start":
                status = message["status"]
                code = _code_of(message)
                if status >= 400 and code is None:
                    error = raised.error or _by_status(status)
                    if raised.error is None and status >= 500 and status not in (503, 504):
                        logger.error("answered %s from below the service's code", status)
                    replaced = True
                    response = error_response(error)
                    if raised.error is None:  # keep what HTTP requires of it (a 405's Allow)
                        for name, value in message.get("headers", []):
                            if name.lower() == b"allow":
                                response.headers["Allow"] = value.decode("latin-1")
                    if self.on_start is not None:
                        self.on_start(response.status_code, error_body(error)["error"])
                    await response(scope, receive, send)
                    return
                if self.on_start is not None:
                    self.on_start(status, code)
            await send(message)

        return wrapped


def _code_of(message) -> str | None:
    """The error code of one of our own error answers (its X-Error-Code header), else None."""
    for name, value in message.get("headers", []):
        if name.lower() == b"x-error-code":
            return value.decode("latin-1")
    return None


def _by_status(status: int) -> ServiceError:
    return BY_STATUS.get(status, Internal if status >= 500 else BadRequest)()
