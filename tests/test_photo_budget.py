"""The preprocessing worker's budget of photo bytes held between decoding and answering."""

from __future__ import annotations

import asyncio

from toonify.photos.budget import PhotoBudget


def test_photos_wait_for_room_and_a_large_one_runs_alone():
    async def scenario() -> list[str]:
        budget = PhotoBudget(10)
        order: list[str] = []
        release = asyncio.Event()

        async def photo(name: str, size: int, hold_until: asyncio.Event | None = None) -> None:
            async with budget.holding(size):
                order.append(f"{name} in ({budget.held})")
                if hold_until is not None:
                    await hold_until.wait()
            order.append(f"{name} out")

        first = asyncio.create_task(photo("a", 6, release))
        await asyncio.sleep(0)  # a yield: "a" takes its bytes
        small = asyncio.create_task(photo("b", 4))  # fits beside a
        large = asyncio.create_task(photo("c", 25))  # over the budget: waits until alone
        await small
        assert not large.done()
        release.set()
        await asyncio.gather(first, large)
        return order

    assert asyncio.run(scenario()) == [
        "a in (6)",
        "b in (10)",
        "b out",
        "a out",
        "c in (25)",
        "c out",
    ]


def test_a_burst_from_one_client_queues_behind_itself():
    async def scenario() -> list[str]:
        budget = PhotoBudget(10)
        started: list[str] = []
        release = asyncio.Event()

        async def photo(name: str, client: str) -> None:
            async with budget.holding(10, client):
                started.append(name)
                await release.wait()

        tasks = [asyncio.create_task(photo(f"burst{i}", "attacker")) for i in range(4)]
        await asyncio.sleep(0)  # a yield: the burst takes its turns first
        tasks.append(asyncio.create_task(photo("user", "user")))
        while len(budget._waiting) < 4:
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
        return started

    # The first of the burst held the budget; the user's photo went next, before the rest.
    assert asyncio.run(scenario())[:2] == ["burst0", "user"]
