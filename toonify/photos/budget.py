"""How much photo the preprocessing worker holds at once, and whose photo goes next.

A photo holds its decoded pixels from ``prepare`` to ``finish`` (while the generator works on its
crops), and the worker takes every request the entry admits. Without a bound, a burst of 12 MP
paste_backs held over a gigabyte between the two; a bound on their count starved the generator of
small photos to batch, and one on their upload bytes let a few well-compressed 12 MP photos
through at once (1 MB of JPEG is 98 MB of pixels pasted back). So the bound is on the pixels'
memory, read from each upload's header before it is decoded (``PhotoWork.pixel_bytes``): many
small photos fit at once, one 12 MP paste_back beside them, and one larger than the budget runs
alone.

Waiting photos go in turn by client, not by arrival: the next is the oldest photo of the client
whose last photo went longest ago (a client with none yet first), so a burst from one address
queues behind itself while everyone else's photo is next.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(order=True)
class _Waiter:
    turn: int
    size: int = field(compare=False)
    client: str = field(compare=False)


class PhotoBudget:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.held = 0
        self.held_by: Counter[str] = Counter()
        self._waiting: list[_Waiter] = []
        self._turns = itertools.count()
        self._last_went: dict[str, int] = {}  # clients with photos held or waiting
        self._changed = asyncio.Condition()

    def _next(self) -> _Waiter:
        return min(self._waiting, key=lambda w: (self._last_went.get(w.client, -1), w.turn))

    @contextlib.asynccontextmanager
    async def holding(self, size: int, client: str = "") -> AsyncIterator[None]:
        """Wait for this photo's turn and for ``size`` more bytes to fit (or for nothing else to
        be held); hold them meanwhile."""
        me = _Waiter(next(self._turns), size, client)
        async with self._changed:
            self._waiting.append(me)
            self._changed.notify_all()
            try:
                await self._changed.wait_for(
                    lambda: (
                        self._next() is me and (self.held == 0 or self.held + size <= self.budget)
                    )
                )
            finally:
                self._waiting.remove(me)
                self._changed.notify_all()  # the next in turn may go now
            self.held += size
            self.held_by[client] += 1
            self._last_went[client] = next(self._turns)
        try:
            yield
        finally:
            async with self._changed:
                self.held -= size
                self.held_by[client] -= 1
                if not self.held_by[client]:
                    del self.held_by[client]
                    if not any(w.client == client for w in self._waiting):
                        self._last_went.pop(client, None)
                self._changed.notify_all()
