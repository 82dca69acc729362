"""Errors as HTTP answers, in one place: what a service raises during a request leaves it as
``{"error": CODE, "detail": ...}`` with the error's status and headers (``toonify.errors``).

``ErrorAnswers`` is the outermost middleware of every service. What an API raises is recorded on
the way out (``@answered_errors``; ``record`` in the request parsers) and handed to BentoML as an
``AnsweredError`` carrying its status, so BentoML answers that status itself (its logs show the
422, not a 500); ``ErrorAnswers`` then puts the documented body in place of BentoML's. Any other
error answer that is not ours (the router's 404 and 405, BentoML's own refusals) gets the
documented form by its status (``errors.from_status``). A caller in the same process (a test, a
script) gets the exception itself.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import ParamSpec, TypeVar

from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from .errors import (
    InputError,
    ServiceError,
    error_body,
    error_headers,
    from_status,
    is_users_error,
    status_of,
)
from .request import RequestState, answering, current_request


def error_response(error: BaseException) -> JSONResponse:
    """The documented answer to ``error``; its ``X-Error-Code`` header marks it as ours."""
    return JSONResponse(
        error_body(error), status_code=status_of(error), headers=error_headers(error)
    )


logger = logging.getLogger("toonify.errors")
P = ParamSpec("P")
R = TypeVar("R")


def record(error: BaseException) -> BaseException:
    """Keep ``error`` for the request being answered (a no-op outside a request); returns it,
    so a raise site reads ``raise record(NotAnImage(...))``."""
    state = current_request()
    if state is not None and state.raised is None:
        state.raised = error
    return error


class AnsweredError(BentoMLException):
    """An error an API raised in a served request, handed to BentoML with its status so that
    BentoML answers (and logs) that status itself; ``__cause__`` is the error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error), error_code=HTTPStatus(status_of(error)))


def answered_errors(api: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """For a ``@bentoml.api`` coroutine: whatever it raises is answered in the documented form
    by ``ErrorAnswers``. In a served request BentoML gets it as an ``AnsweredError`` with its
    status (our own bugs as they are: a 500 with a traceback); in-process callers get the
    exception itself."""

    @functools.wraps(api)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await api(*args, **kwargs)
        except BaseException as exc:  # a cancellation's frames hold the photo too
            release_frames(exc)
            if not isinstance(exc, Exception):
                raise
            record(exc)
            if isinstance(exc, ServiceError | InputError) and current_request() is not None:
                raise AnsweredError(exc) from exc
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


class ErrorAnswers:
    """ASGI middleware, outermost in every service: the one place an exception becomes an answer.

    A request whose handler raised (recorded as above) gets ``error_response`` of that exception
    in place of BentoML's generic 500. Any other error response that is not ours (the router's
    404 and 405, BentoML's own refusals) is answered in the same form by its status.
    ``on_start(status, code)`` sees every answer's status and error code.
    """

    def __init__(
        self,
        app,
        on_start: Callable[[int, str | None], None] | None = None,
        state: Callable[[], RequestState] = RequestState,
    ) -> None:
        self.app = app
        self.on_start = on_start
        self.state = state  # each request's state as it starts (a job's: its deadline, level)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with answering(self.state()) as state:
            started = []
            answer = self._answering(scope, receive, send, state)

            async def watched(message) -> None:
                if message["type"] == "http.response.start":
                    started.append(True)
                await answer(message)

            try:
                await self.app(scope, receive, watched)
            except Exception as exc:  # raised outside an API (a page, a middleware): answered
                if started:
                    raise
                if not is_users_error(exc):
                    logger.exception("unexpected error answering %s", scope.get("path"))
                release_frames(exc)  # a refused submission's frames hold its photo
                state.raised = state.raised or exc
                await answer({"type": "http.response.start", "status": 500, "headers": []})

    def _answering(self, scope, receive, send, state: RequestState):
        replaced = False

        async def wrapped(message) -> None:
            nonlocal replaced
            if replaced:
                return  # the body of the response we replaced
            if message["type"] == "http.response.start":
                status = message["status"]
                code = _code_of(message)
                if status >= 400 and code is None:
                    error = state.raised or from_status(status)
                    if state.raised is None and status >= 500 and status not in (503, 504):
                        logger.error("answered %s from below the service's code", status)
                    replaced = True
                    response = error_response(error)
                    if state.raised is None:  # keep what HTTP requires of it (a 405's Allow)
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
