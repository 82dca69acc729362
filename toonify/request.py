"""The request being answered, as one typed object in one context variable.

Each part is set by the layer that learns it (the gateway: when the answer is due, the client,
the level it was admitted at; the error answers: what the request raised; the request parsers:
the photo's bytes) and read below it; the typed API's coroutine runs in
the context of the middleware that set it. ``answering()`` opens it for one request (the error
answers do, outermost in every service) and, at the end, lets go of the photo and the error
(contexts copied during the request, a worker thread's say, may outlive it).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .levels import Level


@dataclass(eq=False)
class RequestState:
    deadline: float | None = None  # unix time the answer is due: set at arrival
    level: Level | None = None  # the degrade ladder's level it was admitted at
    client: str | None = None  # the network it is counted against (edge/fairness.py)
    raised: BaseException | None = None  # what the request's code raised, to be answered
    # The upload's bytes as the parser read them: the typed API's file parameter only names
    # them (HELD_PHOTO), so they are never written to a file and read back.
    photo: bytes | None = field(default=None, repr=False)

    def close(self) -> None:
        self.photo = self.raised = None

    def take_photo(self) -> bytes | None:
        """The upload's bytes, let go of here (their one owner is the caller now)."""
        photo, self.photo = self.photo, None
        return photo


# What the typed API's file parameter holds for an upload whose bytes the request state keeps:
# a name, not a file (reading it fails loudly).
HELD_PHOTO = Path("<the photo, held by the request>")


_CURRENT: contextvars.ContextVar[RequestState | None] = contextvars.ContextVar(
    "toonify_request", default=None
)


def current_request() -> RequestState | None:
    """The state of the request being answered; None outside one (an in-process call)."""
    return _CURRENT.get()


@contextlib.contextmanager
def answering(state: RequestState | None = None) -> Iterator[RequestState]:
    """``state`` (a new one if None) as the request's for the block, closed when it ends.

    Always a state of this request's own, never one found in the context: uvicorn resumes
    reading a keep-alive connection from inside a request, so the next request on it can start
    in a context that still names the last one's state.
    """
    state = state or RequestState()
    token = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(token)
        state.close()


def _admitted() -> RequestState:
    state = _CURRENT.get()
    if state is None or state.deadline is None or state.level is None or state.client is None:
        raise RuntimeError("outside a request the gateway admitted")
    return state


def request_deadline() -> float:
    """When the current request's answer is due (unix time), as the gateway set it at arrival."""
    return _admitted().deadline  # type: ignore[return-value]


def request_level() -> Level:
    """The level the gateway admitted the current request at."""
    return _admitted().level  # type: ignore[return-value]


def request_client() -> str:
    """The network the gateway counts the current request against."""
    return _admitted().client  # type: ignore[return-value]


def held_photo(image: Path) -> bytes | None:
    """The upload's bytes where ``image`` names the ones this request holds (it came over HTTP);
    None where it is a file of its own (an in-process call with a path)."""
    if image != HELD_PHOTO:
        return None
    state = _CURRENT.get()
    photo = state.take_photo() if state is not None else None
    if photo is None:
        raise RuntimeError("the request's photo was taken already, or never held")
    return photo
