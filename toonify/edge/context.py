"""What the gateway knows of the request being answered, for the API below it.

The gateway sets these at admission (in context variables, which the typed API's coroutine
shares); outside a request the gateway admitted, reading one is a programming error and raises.
"""

from __future__ import annotations

import contextvars

from ..levels import Level

# When the current request's answer is due (unix time): set at arrival, read by the API.
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("toonify_deadline")
# The level the current request was admitted at: set at admission, read by the API.
LEVEL: contextvars.ContextVar[Level] = contextvars.ContextVar("toonify_level")
# The client address the current request is counted against (fairness.py), read by the API.
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("toonify_client")


def request_deadline() -> float:
    """When the current request's answer is due (unix time), as the gateway set it at arrival."""
    try:
        return DEADLINE.get()
    except LookupError:
        raise RuntimeError("request_deadline() outside a request the gateway admitted") from None


def request_client() -> str:
    """The client address the gateway counts the current request against."""
    try:
        return CLIENT.get()
    except LookupError:
        raise RuntimeError("request_client() outside a request the gateway admitted") from None


def request_level() -> Level:
    """The level the gateway admitted the current request at."""
    try:
        return LEVEL.get()
    except LookupError:
        raise RuntimeError("request_level() outside a request the gateway admitted") from None
