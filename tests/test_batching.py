"""The generator's batcher: batches of one crop size, in arrival order, expired work dropped."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from toonify.errors import Timeout
from toonify.generation.batching import Batcher


def crops(count: int, side: int, value: int) -> np.ndarray:
    return np.full((count, side, side, 3), value, dtype=np.uint8)


class Recorder:
    """A model that inverts its crops and records each batch; the first batch says it has
    ``started`` and waits until ``release`` is set, so the jobs sent meanwhile queue behind it."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int]]] = []  # (side, first value of each crop)
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, batch: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        if not self.batches:
            self.started.set()
            self.release.wait(10)
        self.batches.append((batch.shape[1], [int(crop[0, 0, 0]) for crop in batch]))
        return 255 - batch


async def queue_behind_the_first(batcher: Batcher, model: Recorder, sends: list) -> list:
    """Start ``sends`` once the first batch is running, and return when all of them wait."""
    await asyncio.to_thread(model.started.wait, 10)
    rest = [asyncio.create_task(send) for send in sends]
    while batcher.queued < len(rest):
        await asyncio.sleep(0)  # a yield, not a wait: the tasks enqueue at their first step
    return rest


async def send_all(batcher: Batcher, model: Recorder, jobs: list[np.ndarray], deadline: float):
    first = asyncio.create_task(batcher(jobs[0], deadline))
    sends = [batcher(job, deadline) for job in jobs[1:]]
    rest = await queue_behind_the_first(batcher, model, sends)
    model.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_crops_of_two_sizes_go_in_batches_of_one_size_in_arrival_order():
    model = Recorder()
    batcher = Batcher(model, max_batch=8)
    jobs = [
        crops(1, 512, 1),
        crops(1, 256, 2),
        crops(2, 512, 3),
        crops(1, 256, 4),
        crops(1, 512, 5),
        crops(3, 256, 6),
    ]
    results = asyncio.run(send_all(batcher, model, jobs, time.time() + 60))
    # The first runs alone; then the oldest waiting job's size, with every later job of its
    # size; then the other size.
    assert model.batches == [(512, [1]), (256, [2, 4, 6, 6, 6]), (512, [3, 3, 5])]
    for job, (pixels, run) in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(pixels, 255 - job)  # each caller gets its own crops back
        assert run.batch_size == {1: 1, 2: 5, 4: 5, 6: 5, 3: 3, 5: 3}[int(job[0, 0, 0, 0])]


def test_a_batch_holds_at_most_max_batch_crops_and_the_other_size_keeps_its_place():
    model = Recorder()
    batcher = Batcher(model, max_batch=2)
    jobs = [crops(1, 64, 1), crops(1, 64, 2), crops(1, 32, 3), crops(1, 64, 4), crops(1, 64, 5)]
    asyncio.run(send_all(batcher, model, jobs, time.time() + 60))
    assert model.batches == [(64, [1]), (64, [2, 4]), (32, [3]), (64, [5])]


def test_expired_work_is_dropped_not_run():
    model = Recorder()
    batcher = Batcher(model, max_batch=8)

    async def scenario():
        first = asyncio.create_task(batcher(crops(1, 32, 1), time.time() + 60))
        sends = [
            batcher(crops(1, 32, 2), time.time() - 1),  # its deadline passed while it queued
            batcher(crops(1, 32, 3), time.time() + 60),
        ]
        expired, alive = await queue_behind_the_first(batcher, model, sends)
        model.release.set()
        return await asyncio.gather(first, expired, alive, return_exceptions=True)

    _, expired, _ = asyncio.run(scenario())
    assert isinstance(expired, Timeout)
    assert model.batches == [(32, [1]), (32, [3])]


def test_a_failing_batch_fails_only_its_callers():
    calls = []

    def model(batch: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        calls.append(batch.shape[1])
        if batch.shape[1] == 32:
            raise RuntimeError("the model broke")
        return batch

    batcher = Batcher(model, max_batch=8)

    async def scenario():
        return await asyncio.gather(
            batcher(crops(1, 32, 1), time.time() + 60),
            batcher(crops(1, 64, 1), time.time() + 60),
            return_exceptions=True,
        )

    broken, fine = asyncio.run(scenario())
    assert isinstance(broken, RuntimeError) and fine[0].shape == (1, 64, 64, 3)
    assert sorted(calls) == [32, 64]


def test_streams_run_at_once_each_taking_its_share_of_what_waits():
    both_running = threading.Barrier(3, timeout=10)  # the first two batches and the test
    release = threading.Event()
    batches: list[list[int]] = []

    def model(batch: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        batches.append([int(crop[0, 0, 0]) for crop in batch])
        if len(batches) <= 2:
            both_running.wait()  # times out unless two batches run at the same time
            release.wait(10)
        return 255 - batch

    batcher = Batcher(model, max_batch=8, parallel=2)

    async def scenario():
        deadline = time.time() + 60
        first = [asyncio.create_task(batcher(crops(1, 32, v), deadline)) for v in (1, 2, 3, 4)]
        await asyncio.to_thread(both_running.wait)
        release.set()
        answers = await asyncio.gather(*first)
        return answers + [await batcher(crops(1, 32, 5), deadline)]  # alone: at once, alone

    results = asyncio.run(scenario())
    assert sorted(batches[:2]) == [[1, 2], [3, 4]]  # four waiting, two free streams: two each
    assert batches[2:] == [[5]]
    assert [int(pixels[0, 0, 0, 0]) for pixels, _ in results] == [254, 253, 252, 251, 250]


def test_each_crops_features_travel_with_it_through_a_batch():
    """Jobs batched together (and one of another size, left for the next batch) each get the
    toon made with their own feature rows."""
    model = Recorder()

    def run(batch: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        model(batch)
        assert features is not None and len(features) == len(batch)
        return (batch.astype(int) * 0 + features[:, :1, :1, None].astype(int)).astype(np.uint8)

    batcher = Batcher(run, max_batch=8)

    def rows(count: int, value: int) -> np.ndarray:
        return np.full((count, 5, 8), value, np.float32)

    async def scenario():
        first = asyncio.create_task(batcher(crops(1, 32, 1), time.time() + 60, rows(1, 10)))
        rest = await queue_behind_the_first(
            batcher,
            model,
            [
                batcher(crops(2, 32, 2), time.time() + 60, rows(2, 20)),
                batcher(crops(1, 64, 3), time.time() + 60, rows(1, 30)),
                batcher(crops(1, 32, 4), time.time() + 60, rows(1, 40)),
            ],
        )
        model.release.set()
        return [await first] + [await task for task in rest]

    answers = asyncio.run(scenario())
    assert [sorted(set(out.ravel().tolist())) for out, _ in answers] == [[10], [20], [30], [40]]
    assert [len(out) for out, _ in answers] == [1, 2, 1, 1]
    assert [side for side, _ in model.batches] == [32, 32, 64]  # 2 + 1 crops of 32 together
