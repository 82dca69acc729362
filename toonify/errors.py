"""Every failure a request can meet: one class per failure, one HTTP status each, one JSON form.

Mistakes in an upload are raised by ``preprocess`` (which knows nothing of HTTP); their statuses
are in ``INPUT_STATUS``. The service's own failures are ``ServiceError`` subclasses that carry
their status. 5xx is only for our side, and a 503 always says when to retry. Every error body is
``{"error": CODE, "detail": "what to do"}`` (``num_faces`` too with ``no_face``).

This module is the taxonomy alone (no web framework: usable from any layer);
``toonify.error_answers`` renders a raised error as its HTTP answer, in one place.
"""

from __future__ import annotations

import json
from typing import ClassVar

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

    def __init__(self, detail: str | None = None, allow: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allow = allow  # the methods the path takes: the answer's Allow header


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


class TooManyJobs(ServiceError):
    code, status, default_retry_after = "too_many_jobs", 429, 30
    default_detail = (
        "You have as many jobs waiting as one client may; submit more once some have finished."
    )


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
    TooManyJobs,
    Expired,
)
BY_CODE: dict[str, type[Exception]] = {
    **{error.code: error for error in INPUT_STATUS},
    **{error.code: error for error in SERVICE_ERRORS},
}
# Error answers that are not ours (the router's, BentoML's, a dependency's without our body):
# the one table of what each status means. Any other 4xx is a bad request; any other 5xx our bug.
FOREIGN_STATUS: dict[int, type[ServiceError] | type[InputError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    408: SlowUpload,
    410: Expired,
    413: ImageTooLarge,  # the request was too large: the only 413 a router or BentoML gives
    500: Internal,
    503: NotReady,
    504: Timeout,
}


def from_status(status: int) -> Exception:
    """The error an answer of ``status`` that is not ours stands for."""
    kind = FOREIGN_STATUS.get(status, Internal if status >= 500 else BadRequest)
    if kind is ImageTooLarge:
        return ImageTooLarge("The request is too large; send a smaller photo.")
    return kind()


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


def error_headers(error: BaseException) -> dict[str, str]:
    """The headers of the documented answer to ``error``: ``X-Error-Code`` marks it as ours;
    ``Retry-After`` with a 503 or 504; ``Allow`` with a 405."""
    headers = {"X-Error-Code": error_body(error)["error"]}
    if retry_after := getattr(error, "retry_after", None):
        headers["Retry-After"] = str(retry_after)
    if isinstance(error, MethodNotAllowed) and error.allow:
        headers["Allow"] = ", ".join(error.allow)
    return headers


def error_from_body(status: int, text: str) -> Exception:
    """The exception another service answered with, rebuilt from its JSON body; a 5xx that is
    not ours (BentoML's own, a crash) becomes Unavailable or Internal by its status."""
    try:
        body = json.loads(text)
        kind = BY_CODE[body["error"]]
        detail = body["detail"]
    except (ValueError, KeyError, TypeError):
        return from_status(status)
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


def is_users_error(error: BaseException) -> bool:
    """A failure the request caused (4xx), as opposed to our own."""
    return isinstance(error, ServiceError | InputError) and status_of(error) < 500
