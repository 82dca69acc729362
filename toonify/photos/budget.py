"""How much photo the preprocessing worker holds at once.

A photo holds its full-size pixels from ``prepare`` to ``finish`` (while the generator works on its
crops), and the worker takes every request the entry admits. Without a bound, a burst of 12 MP
paste_backs held over a gigabyte between the two; a bound on their count starved the generator of
small photos to batch. So the bound is on the uploads' bytes, a proxy for their pixels known before
decoding: many small photos fit at once, few large ones, and one larger than the budget runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class PhotoBudget:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.held = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def holding(self, size: int) -> AsyncIterator[None]:
        """Wait until ``size`` more bytes fit (or nothing else is held), hold them meanwhile."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0 or self.held + size <= self.budget)
            self.held += size
        try:
            yield
        finally:
            async with self._changed:
                self.held -= size
                self._changed.notify_all()
