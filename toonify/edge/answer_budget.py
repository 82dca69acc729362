"""The answers waiting for their clients, bounded: a client that does not read its answer holds
its bytes for at most ``answer_idle_timeout_s`` a piece, and within its share of
``max_unsent_answer_bytes`` (edge/fairness.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.datastructures import Headers

from ..error_answers import error_response
from ..errors import Overloaded
from ..settings import Settings
from .fairness import FairSlots
from .uploads import Message, Scope, Send, receive_nothing


class AnswerNotTaken(Exception):
    """The client stopped taking its answer: the connection is closed, its bytes let go."""


ANSWER_PIECE = 64 * 1024  # the answer is handed over in pieces of this size


class AnswerBudget:
    def __init__(self, settings: Settings, overloaded: Callable[[str], Overloaded]) -> None:
        self.settings = settings
        self.overloaded = overloaded
        self.unsent = FairSlots(
            round(settings.client_share * settings.max_unsent_answer_bytes),
            hard_limit=settings.max_unsent_answer_bytes,
        )

    def fits(self, client: str, length: int) -> bool:
        """Whether ``length`` more answer bytes may wait for ``client``: within the instance's
        budget, and within the client's share of it unless it has nothing else waiting."""
        held = self.unsent.held[client]
        return self.unsent.total + length <= self.unsent.hard_limit and (
            held == 0 or held + length <= self.unsent.share
        )

    def bounded(self, scope: Scope, send: Send, client: str, arrived: float) -> Send:
        """A send that hands the answer over in pieces, each taken by the client within
        ``answer_idle_timeout_s``, and counts the bytes not yet taken against the instance's and
        the client's share of ``max_unsent_answer_bytes``: an answer that does not fit is
        answered 503 instead, and one the client does not take closes the connection. The
        answer's Server-Timing gets ``total``: arrival to answer, queues included."""
        refused = False

        async def bounded(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the body of an answer replaced by the refusal
            if message["type"] == "http.response.start":
                length = int(Headers(raw=message.get("headers", [])).get("content-length", 0))
                if message["status"] < 400 and not self.fits(client, length):
                    refused = True
                    full = self.overloaded("Too many answers are waiting to be taken")
                    await error_response(full)(scope, receive_nothing, send)
                    return
                total = f"total;dur={(time.perf_counter() - arrived) * 1000:.1f}"
                await send({**message, "headers": with_timing(message.get("headers", []), total)})
                return
            body = message.get("body", b"")
            if not body:
                await send(message)
                return
            self.unsent.take(client, len(body))
            sent = 0
            try:
                for offset in range(0, len(body), ANSWER_PIECE):
                    piece = body[offset : offset + ANSWER_PIECE]
                    more = message.get("more_body", False) or offset + ANSWER_PIECE < len(body)
                    try:
                        await asyncio.wait_for(
                            send({"type": "http.response.body", "body": piece, "more_body": more}),
                            self.settings.answer_idle_timeout_s,
                        )
                    except TimeoutError:
                        raise AnswerNotTaken from None
                    sent += len(piece)
                    self.unsent.give_back(client, len(piece))
            finally:
                self.unsent.give_back(client, len(body) - sent)

        return bounded


def with_timing(headers: list, entry: str) -> list:
    """``headers`` with ``entry`` added to their Server-Timing."""
    timing = [value for name, value in headers if name.lower() == b"server-timing"]
    kept = [(name, value) for name, value in headers if name.lower() != b"server-timing"]
    value = b", ".join([*timing, entry.encode()])
    return [*kept, (b"server-timing", value)]
