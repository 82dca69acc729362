"""A fix for a BentoML 1.4.39 defect this service meets under load, applied by service.py.

BentoML's TimeoutMiddleware (in every service's stack) schedules a timer per request with
``loop.call_later(timeout, ...)`` and never cancels it when the request ends. Each timer stays on
the event loop for the whole timeout (130 s for the entry service), holding its future and a copy
of the request's context (with its tracing span): at a few hundred requests a second, such as a
flood of refusals after a viral post, a worker grew by ~500 MB in two minutes
(tests/test_hostile.py::test_the_entry_worker_does_not_grow_with_requests).

``install()`` puts a subclass in its place whose timer is cancelled once the response has
started; everything else behaves as BentoML's (504 when the timeout passes first, here in the
documented JSON form). BentoML's
app factory looks the class up by name when it builds each app, so this must run before
`bentoml serve` builds the apps: at the import of service.py.
"""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic

from .errors import Timeout, error_response


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


def install() -> None:
    traffic.TimeoutMiddleware = TimeoutMiddleware
