"""Per-client bounds (toonify/edge/fairness.py): what one address can hold of an instance."""

from __future__ import annotations

import ipaddress

from toonify.edge.fairness import FairSlots, client_address, parse_networks


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
