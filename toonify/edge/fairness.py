"""Per-client fairness: one client address cannot take an instance away from everyone else.

Each bound of the gateway (uploads being received, requests being processed, answer bytes not yet
taken) is a ``FairSlots``. A client sees its own holdings in full, and every other client's only
up to ``share``: a request is weighed against ``others_within_share + own``. So

- one client alone (a load test from one address) meets exactly the instance's bounds, as before;
- an attacker holding many slots meets the bounds on its own requests, while everyone else counts
  it as ``share`` and is still admitted, at the full level;
- ``hard_limit`` bounds the real total whatever the mix (many attacking addresses at once).

The client address is the peer's, or, behind a proxy the operator trusts
(``TOONIFY_TRUSTED_PROXIES``), the nearest untrusted address in ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FairSlots:
    def __init__(self, share: int, hard_limit: int) -> None:
        self.share = max(1, share)
        self.hard_limit = hard_limit
        self.held: Counter[str] = Counter()
        self.total = 0
        self._within_share = 0  # sum over clients of min(held, share)

    def weight_for(self, client: str) -> int:
        """What ``client`` meets: its own holdings in full, the others' up to their share."""
        own = self.held[client]
        return self._within_share - min(own, self.share) + own

    def full_for(self, client: str, bound: int) -> bool:
        return self.total >= self.hard_limit or self.weight_for(client) >= bound

    def fits(self, client: str, amount: int, bound: int) -> bool:
        """Whether ``amount`` more fits within ``bound`` as ``client`` meets it, below the hard
        limit; a client holding nothing yet may always take one (however large)."""
        if self.total >= self.hard_limit:
            return False
        return not self.held[client] or self.weight_for(client) + amount <= bound

    def take(self, client: str, amount: int = 1) -> None:
        before = self.held[client]
        self.held[client] = before + amount
        self.total += amount
        self._within_share += min(before + amount, self.share) - min(before, self.share)

    def give_back(self, client: str, amount: int = 1) -> None:
        before = self.held[client]
        after = before - amount
        self.total -= amount
        self._within_share += min(after, self.share) - min(before, self.share)
        if after:
            self.held[client] = after
        else:
            del self.held[client]  # the table holds only clients with something in flight


def parse_networks(text: str) -> tuple[Network, ...]:
    """``TOONIFY_TRUSTED_PROXIES``: comma-separated addresses or networks."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]
) -> str:
    """The peer, unless it is a trusted proxy: then the nearest address in X-Forwarded-For (read
    from the right, where the trusted proxies appended) that is not itself a trusted proxy."""
    address = peer or "unknown"
    if not trusted or not _is_trusted(address, trusted):
        return address
    hops = [hop.strip()[:64] for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _is_trusted(hop, trusted):
            return hop
        address = hop
    return address


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address: a client's made-up header, never a proxy
    return any(ip in network for network in trusted)
