"""Per-client bounds (toonify/edge/fairness.py): what one address can hold of an instance."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from toonify.edge.fairness import (
    FairSlots,
    PreemptibleSlots,
    client_address,
    client_network,
    parse_networks,
)


def test_a_client_alone_meets_the_whole_bound_and_others_count_up_to_their_share():
    slots = FairSlots(share=4, hard_limit=32)
    for _ in range(10):
        slots.take("attacker")
    assert slots.full_for("attacker", 10) and not slots.full_for("attacker", 11)
    # Everyone else meets the attacker's ten as four.
    assert slots.weight_for("user") == 4 and not slots.full_for("user", 5)
    slots.take("user")
    assert slots.weight_for("user") == 5
    for _ in range(10):
        slots.give_back("attacker")
    assert slots.weight_for("user") == 1 and "attacker" not in slots.held


def test_bytes_fit_within_the_bound_and_a_client_with_nothing_held_may_send_one():
    mib = 2**20
    slots = FairSlots(share=2 * mib, hard_limit=16 * mib)
    assert slots.fits("attacker", 20 * mib, 8 * mib)  # nothing held: one, however large
    slots.take("attacker", 3 * mib)
    for _ in range(5):
        assert slots.fits("attacker", mib, 8 * mib)
        slots.take("attacker", mib)
    assert not slots.fits("attacker", mib, 8 * mib)  # 8 MiB held: the bound
    # Another client meets the attacker's 7 MiB as its 2 MiB share.
    slots.take("user", mib)
    assert slots.fits("user", 5 * mib, 8 * mib) and not slots.fits("user", 6 * mib, 8 * mib)
    slots.take("other", 8 * mib)  # past the hard limit (16 MiB) nobody is let in
    assert not slots.fits("user", 1, 8 * mib) and not slots.fits("newcomer", 1, 8 * mib)


def test_the_client_behind_a_trusted_proxy_is_the_nearest_untrusted_hop():
    proxies = parse_networks("10.0.0.0/8, 192.168.1.1")
    assert proxies[0] == ipaddress.ip_network("10.0.0.0/8")
    assert client_address("10.1.2.3", ["203.0.113.9, 10.4.4.4"], proxies) == "203.0.113.9"
    assert client_address("198.51.100.7", ["203.0.113.9"], proxies) == "198.51.100.7"
    assert client_address("10.1.2.3", ["not-an-ip, 10.4.4.4"], proxies) == "not-an-ip"
    assert client_address(None, [], ()) == "unknown"


@pytest.mark.parametrize(
    ("address", "ipv4_prefix", "network"),
    [
        ("2001:db8:1:2:aaaa::1", 32, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:1234:5678:9abc", 32, "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", 32, "198.51.100.7"),
        ("198.51.100.7", 32, "198.51.100.7"),
        ("198.51.100.7", 24, "198.51.100.0/24"),
        ("queue", 24, "not-an-address:queue"),
    ],
)
def test_a_client_is_its_network(address, ipv4_prefix, network):
    assert client_network(address, ipv4_prefix, 64) == network


def test_an_arrival_with_less_arriving_takes_over_the_heaviest_clients_oldest_slot():
    """Eight attackers at their shares fill the hard limit; a ninth client still gets in, and the
    attacker that loses a slot is the one holding the most, its longest-held one first."""

    async def scenario():
        slots = PreemptibleSlots(share=2, hard_limit=8)
        stalls: dict[tuple[str, int], asyncio.Task] = {}
        cut: list[tuple[str, int]] = []
        started = asyncio.Event()

        async def stall(client: str, index: int) -> None:
            with slots.holding(client) as holder:
                started.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    if not holder.cut:
                        raise
                    cut.append((client, index))

        for index, client in enumerate(["a"] * 3 + ["b"] * 2 + ["c"] * 2 + ["d"]):
            stalls[client, index] = asyncio.create_task(stall(client, index))
            await asyncio.sleep(0)
        assert slots.total == 8 and slots.full_for("user", 8)
        assert slots.make_room("user")
        await asyncio.sleep(0)
        assert cut == [("a", 0)] and slots.held["a"] == 2 and slots.total == 7
        with slots.holding("user"):
            # Nobody holds two more than "d" (one) does; a newcomer with none takes one of two.
            assert slots.make_room("b") is False and slots.make_room("d") is False
            assert slots.make_room("newcomer") is True
            await asyncio.sleep(0)
            assert len(cut) == 2 and cut[-1][0] in "abc"
        for task in stalls.values():
            task.cancel()
        await asyncio.gather(*stalls.values(), return_exceptions=True)
        assert slots.total == 0 and not slots.holders

    asyncio.run(scenario())
