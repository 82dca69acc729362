"""Where this service reaches into BentoML's internals, each checked when the service loads.

No public BentoML 1.4 API serves these (docs/bentoml-patches.md gives, for each, the upstream
defect and the smallest upstream fix). ``install()`` runs at the import of service.py, before
`bentoml serve` builds the apps, and first checks every member it relies on: if BentoML changed
them, the service refuses to start with a message naming the patch, instead of running without it.

1. ``TimeoutMiddleware``: BentoML's schedules a timer per request with ``loop.call_later`` and
   never cancels it; each stays on the loop for the whole timeout (130 s for the entry service)
   with its future and a copy of the request's context. At a few hundred requests a second (a
   flood of refusals after a viral post) a worker grew by ~500 MB in two minutes. Ours cancels
   the timer once the response has started and answers the timeout in the documented form.
   BentoML's app factory looks the class up by name on its module when it builds each app.
2. Request parsers: ``POST /toonify``'s two forms are parsed by ``toonify.edge.forms``, registered
   in BentoML's table of parsers by media type (BentoML's multipart parser is lenient and
   downloads links; a raw body has no parser of its own).
3. BentoML logs every exception an API raises with its traceback. Our APIs raise the user's
   mistakes (no face, not an image) as exceptions that are answered 4xx: those records are
   dropped; our own failures are still logged.
4. The Swagger UI page: BentoML's own, read from its package (``swagger_ui_page``).

Reliances without a patch, each checked the same way (docs/bentoml-patches.md):

5. The request parsers subclass ``_bentoml_impl.serde``'s and override ``parse_request``
   (``JSONSerde``, ``MultipartSerde``: re-exported here for toonify.edge.forms).
6. Starlette's ``MultiPartParser.spool_max_size``: set so photos never spool to disk.
7. A dependency's error answer reaches the caller as a ``BentoMLException`` whose message is
   the answer's body (``_bentoml_impl.client.proxy2.map_exception``): toonify.calls rebuilds the
   typed error from it.
8. ``BENTOML_NO_UDS`` in the environment makes BentoML connect services over TCP.
9. A service class's ``dependencies`` table (``dependency_client``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from pathlib import Path
from typing import Any

import bentoml
from _bentoml_impl.serde import JSONSerde, MultipartSerde
from bentoml._internal.server import base_app, http_app
from bentoml._internal.server.http import traffic
from starlette.formparsers import MultiPartParser

from .error_answers import AnsweredError, error_response
from .errors import Timeout, is_users_error

TESTED_WITH = "1.4.39"


class PatchOutOfDate(RuntimeError):
    """BentoML changed something a patch relies on: re-check the patch against this version."""


def require(condition: bool, patch: str) -> None:
    if not condition:
        raise PatchOutOfDate(
            f"BentoML {bentoml.__version__} (tested: {TESTED_WITH}) no longer has what this "
            f"service patches: {patch}. See docs/bentoml-patches.md."
        )


class TimeoutMiddleware(traffic.TimeoutMiddleware):
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        started = loop.create_future()  # done at the response's first message, or the timeout
        timer = loop.call_later(self.timeout, self._set_timer_out, started)

        async def first_message_starts(message) -> None:
            if not started.done():
                started.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, first_message_starts))
        try:
            await started
        except TimeoutError:
            if task.cancel():
                await error_response(Timeout())(scope, receive, send)
            return
        finally:
            timer.cancel()  # the fix: the timer goes with the request
        await task


class UsersErrorsUnlogged(logging.Filter):
    """Drops BentoML's traceback for an exception that is the user's mistake (answered 4xx)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, AnsweredError):
            error = error.__cause__
        return error is None or not is_users_error(error)


def swagger_ui_page() -> Path:
    import _bentoml_impl.server as bentoml_server

    page = Path(bentoml_server.__file__).parent / "main-openapi.html"
    require(page.is_file(), "the Swagger UI page _bentoml_impl/server/main-openapi.html")
    return page


PARSER_SIGNATURE = ["self", "request", "cls"]  # Serde.parse_request(self, request, cls)


_PARSERS: dict[str, type] = {}  # what install() put in BentoML's table, by media type


def install(parsers: dict[str, type]) -> None:
    """Every patch, each checked first; ``parsers`` (toonify.edge.forms.PARSERS) take the
    request parsing of their media types."""
    from _bentoml_impl import serde

    check_reliances()
    _PARSERS.update(parsers)
    if all(installed().values()):
        return
    require(
        callable(getattr(traffic.TimeoutMiddleware, "_set_timer_out", None))
        and "TimeoutMiddleware" in base_app.BaseAppFactory.middlewares.fget.__code__.co_names,
        "bentoml._internal.server.http.traffic.TimeoutMiddleware, looked up by the app factory",
    )
    require(
        isinstance(serde.ALL_SERDE, dict)
        and serde.ALL_SERDE.get("multipart/form-data") is serde.MultipartSerde,
        "_bentoml_impl.serde.ALL_SERDE, the request parsers by media type",
    )
    require(
        callable(getattr(http_app, "log_exception", None))
        and http_app.logger.name == "bentoml._internal.server.http_app",
        "bentoml._internal.server.http_app.log_exception and its logger",
    )
    traffic.TimeoutMiddleware = TimeoutMiddleware
    serde.ALL_SERDE.update(parsers)
    if not any(isinstance(f, UsersErrorsUnlogged) for f in http_app.logger.filters):
        http_app.logger.addFilter(UsersErrorsUnlogged())


def check_reliances() -> None:
    """What the service relies on without patching it (5, 6 and 8 above), checked at import."""
    for base in (JSONSerde, MultipartSerde):
        parse = getattr(base, "parse_request", None)
        require(
            inspect.iscoroutinefunction(parse)
            and list(inspect.signature(parse).parameters) == PARSER_SIGNATURE,
            f"_bentoml_impl.serde.{base.__name__}.parse_request(self, request, cls), which the "
            "request parsers override",
        )
    require(
        isinstance(getattr(MultiPartParser, "spool_max_size", None), int),
        "starlette.formparsers.MultiPartParser.spool_max_size (photos kept in memory)",
    )
    # Photos never spool to a temporary file on disk: the gateway has bounded the whole body.
    MultiPartParser.spool_max_size = 1 << 62
    from _bentoml_impl.server import serving

    require(
        "BENTOML_NO_UDS" in inspect.getsource(serving),
        "BENTOML_NO_UDS, read by _bentoml_impl.server.serving (services over TCP)",
    )
    os.environ.setdefault("BENTOML_NO_UDS", "1")


def check_dependency_errors() -> None:
    """That a dependency's error answer becomes a BentoMLException carrying the answer's body
    (7 above), checked in each worker: the client module imports aiohttp."""
    from _bentoml_impl.client import proxy2

    code = getattr(getattr(proxy2, "map_exception", None), "__code__", None)
    names = set(code.co_names) if code is not None else set()
    require(
        {"text", "error_mapping"} <= names,
        "_bentoml_impl.client.proxy2.map_exception, the dependency's error body as the "
        "exception's message",
    )


def dependency_client(service: Any, name: str) -> Any:
    """The running worker's client of ``service``'s dependency ``name``."""
    dependency = getattr(service, "dependencies", {}).get(name)
    require(callable(getattr(dependency, "get", None)), f"{service}.dependencies[{name!r}].get()")
    return dependency.get()


def check_app_factory() -> None:
    """That the app factory reads the parsers from ``ALL_SERDE``, checked by each service when
    it starts in its worker, where the factory is already imported (`bentoml serve`'s main
    process would import it, and aiohttp with it, only for this check: 0.15 s of its start)."""
    from _bentoml_impl.server.app import ServiceAppFactory

    require(
        "ALL_SERDE" in ServiceAppFactory.api_endpoint.__code__.co_names,
        "_bentoml_impl.serde.ALL_SERDE, read by the app factory for each request",
    )
    check_dependency_errors()


def installed() -> dict[str, bool]:
    """Which patches are in place in this process (for tests and /readyz diagnostics)."""
    from _bentoml_impl import serde

    return {
        "timeout_middleware": traffic.TimeoutMiddleware is TimeoutMiddleware,
        "request_parsers": bool(_PARSERS)
        and all(serde.ALL_SERDE.get(kind) is parser for kind, parser in _PARSERS.items()),
        "users_errors_unlogged": any(
            isinstance(f, UsersErrorsUnlogged) for f in http_app.logger.filters
        ),
    }
