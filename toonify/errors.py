"""Every failure a request can meet: one class per failure, one HTTP status each, one JSON form.

Mistakes in an upload are raised by ``preprocess`` (which knows nothing of HTTP); their statuses
are in ``INPUT_STATUS``. The service's own failures are ``ServiceError`` subclasses that carry
their status. 5xx is only for our side, and a 503 always says when to retry. Every error body is
``{"error": CODE, "detail": "what to do"}`` (``num_faces`` too with ``no_face``).
"""

from __future__ import annotations

import json
from typing import ClassVar

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


SERVICE_ERRORS: tuple[type[ServiceError], ...] = (
    Internal, BadOption, BadRequest, SlowUpload, OutputTooLarge, NotFound, MethodNotAllowed,
    Overloaded, Unavailable, GeneratorUnavailable, NotReady, Timeout,
)  # fmt: skip
BY_CODE: dict[str, type[Exception]] = {
    **{error.code: error for error in INPUT_STATUS},
    **{error.code: error for error in SERVICE_ERRORS},
}
# Errors that come from elsewhere (the router, BentoML) get the code of their status.
BY_STATUS: dict[int, type[ServiceError]] = {
    400: BadRequest, 404: NotFound, 405: MethodNotAllowed, 408: SlowUpload,
    413: OutputTooLarge, 500: Internal, 503: NotReady, 504: Timeout,
}  # fmt: skip


def status_of(error: Exception) -> int:
    if isinstance(error, ServiceError):
        return error.status
    if isinstance(error, InputError):
        return INPUT_STATUS.get(type(error), 400)
    return 500


def error_body(error: Exception) -> dict:
    if not isinstance(error, ServiceError | InputError):
        error = Internal()
    body: dict = {"error": error.code, "detail": str(error)}
    if isinstance(error, NoFaceFound):
        body["num_faces"] = error.num_faces
    return body


def error_response(error: Exception) -> JSONResponse:
    retry_after = getattr(error, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse(error_body(error), status_code=status_of(error), headers=headers)


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
