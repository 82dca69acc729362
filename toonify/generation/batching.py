"""The generator's batcher: run at once when idle, batch whatever queued up while busy.

A crop that arrives while the model has a free stream (``parallel`` runs at once, one per
stream of the runtime) runs immediately; crops that arrive while every stream runs wait and go
together in the next free one, up to ``max_batch`` crops of one size (the full and the reduced
service level send crops of two sizes). So batches grow with the load and a lone request never
waits for company. (BentoML's adaptive batcher learns a
cork delay from the queue waits of its last 50 batches: after an overload it held lone requests
~0.6 s for minutes. This one has no learned state.)

Work whose deadline has passed by the time its batch starts is dropped, not run: after a burst,
nobody is waiting for it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import Timeout


@dataclass(frozen=True)
class BatchRun:
    """What one caller's crops went through."""

    queued_s: float
    run_s: float  # this caller's share of the batch's run time
    batch_size: int  # crops in the batch


@dataclass(eq=False)
class _Job:
    crops: np.ndarray
    features: np.ndarray | None  # where each crop's features are, row by row with the crops
    deadline: float  # time.time()
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """``await batcher(crops, deadline, features)`` -> (outputs, BatchRun); ``run(crops,
    features)`` maps a stacked batch of crops (and their features, stacked the same way, or None
    where a job came without) to outputs of the same length and is called in worker threads, up
    to ``parallel`` batches at a time."""

    def __init__(
        self,
        run: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
        max_batch: int,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
        parallel: int = 1,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.parallel = parallel
        self._queue: collections.deque[_Job] = collections.deque()
        self._draining: set[asyncio.Task] = set()
        self._running = 0  # batches being run now

    async def __call__(
        self, crops: np.ndarray, deadline: float, features: np.ndarray | None = None
    ) -> tuple[np.ndarray, BatchRun]:
        job = _Job(crops, features, deadline, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        # A drain that found the queue empty is done at once (a done-callback would come later).
        self._draining = {task for task in self._draining if not task.done()}
        if len(self._draining) < self.parallel:
            self._draining.add(asyncio.create_task(self._drain()))
        return await job.future

    @property
    def queued(self) -> int:
        """Jobs waiting for a batch (not those in the batch being run)."""
        return len(self._queue)

    def _next_batch(self) -> list[_Job]:
        """The oldest job and, in arrival order, the later ones whose crops have its size, up to
        max_batch crops (one job even if it alone is larger); the others keep their places.
        Jobs nobody waits for any more are dropped."""
        batch: list[_Job] = []
        left: collections.deque[_Job] = collections.deque()
        crops = 0
        now = time.time()
        # With several streams a free one takes its share of what waits, leaving the rest to the
        # other free streams (on a CPU a crop on its own stream beats a larger batch).
        waiting = sum(len(job.crops) for job in self._queue)
        free = self.parallel - self._running
        limit = min(self.max_batch, -(-waiting // free))
        while self._queue:
            job = self._queue.popleft()
            if job.future.done():  # its caller gave up
                continue
            if job.deadline <= now:
                job.future.set_exception(
                    Timeout("The request ran out of time waiting for the generator.")
                )
                continue
            fits = not batch or (
                job.crops.shape[1:] == batch[0].crops.shape[1:] and crops + len(job.crops) <= limit
            )
            if not fits:
                left.append(job)
                if crops >= limit:
                    break
                continue
            batch.append(job)
            crops += len(job.crops)
        left.extend(self._queue)
        self._queue = left
        return batch

    async def _drain(self) -> None:
        while batch := self._next_batch():
            started = time.perf_counter()
            self._running += 1
            try:
                outputs = await asyncio.to_thread(self.run, *_stacked(batch))
            except Exception as exc:  # every caller of the batch hears of it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self._running -= 1
            seconds = time.perf_counter() - started
            size = sum(len(job.crops) for job in batch)
            self.on_batch(size, seconds)
            offset = 0
            for job in batch:
                count = len(job.crops)
                if not job.future.done():
                    run = BatchRun(started - job.enqueued, seconds * count / size, size)
                    job.future.set_result((outputs[offset : offset + count], run))
                offset += count


def _stacked(batch: list[_Job]) -> tuple[np.ndarray, np.ndarray | None]:
    if len(batch) == 1:  # no copy for a batch of one photo's crops
        return batch[0].crops, batch[0].features
    crops = np.concatenate([job.crops for job in batch])
    if any(job.features is None for job in batch):
        return crops, None
    return crops, np.concatenate([job.features for job in batch])
