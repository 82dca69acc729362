"""Calls between services, within the request's deadline, with errors in the one taxonomy.

The other service's answer comes back as its typed value; its error answer is rebuilt as the
same exception (status and code kept); a service that cannot be reached is Unavailable (503 with
Retry-After), and a deadline that passes is Timeout (504), never a wait past it.

One retry, on a connection that failed before any answer: BentoML's internal client keeps idle
connections to a dependency for 15 s while uvicorn closes them after 5 s (bentoml/BentoML#4971),
and a worker may have just been replaced. The retry gets at most ``RETRY_BUDGET_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bentoml.exceptions import BentoMLException

from .errors import Timeout, Unavailable, error_from_body

logger = logging.getLogger("toonify.calls")
T = TypeVar("T")
RETRY_BUDGET_S = 5.0


async def call_service(
    method: Callable[..., Awaitable[T]],
    deadline: float,
    unavailable: type[Unavailable] = Unavailable,
    /,
    **arguments,
) -> T:
    for attempt in (1, 2):
        remaining = deadline - time.time()
        if attempt == 2:
            remaining = min(remaining, RETRY_BUDGET_S)
        if remaining <= 0:
            raise Timeout()
        try:
            async with asyncio.timeout(remaining):
                return await method(**arguments)
        except TimeoutError:
            if attempt == 2:
                raise unavailable() from None
            raise Timeout() from None
        except BentoMLException as exc:  # the service answered, with an error status
            raise error_from_body(int(exc.error_code), exc.message) from None
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            logger.warning("call to another service failed (attempt %d): %r", attempt, exc)
    raise unavailable()


def is_connection_error(exc: BaseException) -> bool:
    """A connection that failed before any answer. aiohttp is imported here, not with this
    module: BentoML's client has imported it by the time a call fails, and `bentoml serve`'s
    main process, which imports this module but calls nothing, starts 0.1 s sooner."""
    import aiohttp

    # RuntimeError: aiohttp's "Connection closed." when a closed connection is read
    return isinstance(exc, RuntimeError | aiohttp.ClientConnectionError)
