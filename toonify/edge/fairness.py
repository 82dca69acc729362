"""Per-client fairness: one client address cannot take an instance away from everyone else.

Each bound of the gateway (uploads being received, requests being processed, answer bytes not yet
taken) is a ``FairSlots``. A client sees its own holdings in full, and every other client's only
up to ``share``: a request is weighed against ``others_within_share + own``. So

- one client alone (a load test from one address) meets exactly the instance's bounds, as before;
- an attacker holding many slots meets the bounds on its own requests, while everyone else counts
  it as ``share`` and is still admitted, at the full level;
- ``hard_limit`` bounds the real total whatever the mix (many attacking addresses at once).

Addresses are cheap to an attacker (one IPv6 /64 holds 2^64 of them; eight IPv4 addresses filled
the hard limit), so two more rules hold past the shares:

- a client is a network, not an address: an IPv6 address counts as its /64 and an IPv4 one as its
  /32 (``TOONIFY_CLIENT_IPV6_PREFIX``, ``TOONIFY_CLIENT_IPV4_PREFIX``);
- uploads being received can be taken over (``PreemptibleSlots``): when the bound is full for a
  client, the client holding the most uploads, two or more than it, loses its longest-arriving
  one (503 ``overloaded``). However many addresses stall uploads, a client with nothing arriving
  gets in. Rate limits per source and header deadlines remain the balancer's (docs/reliability.md).

The client address is the peer's, or, behind a proxy the operator trusts
(``TOONIFY_TRUSTED_PROXIES``), the nearest untrusted address in ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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


@dataclass(eq=False)
class Holder:
    """One slot of ``PreemptibleSlots``, held by the task receiving an upload."""

    task: asyncio.Task
    cut: bool = False  # taken over by another client: the task was cancelled for it


class PreemptibleSlots(FairSlots):
    """Fair slots whose holders a fairer arrival may take over (uploads being received: a
    stalled upload has done no work that is lost)."""

    def __init__(self, share: int, hard_limit: int) -> None:
        super().__init__(share, hard_limit)
        self.holders: dict[str, deque[Holder]] = {}

    def make_room(self, client: str) -> bool:
        """Cut off the longest-held slot of the client holding the most, if that is two or more
        than ``client`` holds; whether a slot was freed for ``client``."""
        if not self.holders:
            return False
        heaviest = max(self.holders, key=lambda other: len(self.holders[other]))
        if len(self.holders[heaviest]) < len(self.holders.get(client, ())) + 2:
            return False
        holder = self.holders[heaviest].popleft()
        if not self.holders[heaviest]:
            del self.holders[heaviest]
        holder.cut = True
        holder.task.cancel()
        return True

    @contextlib.contextmanager
    def holding(self, client: str) -> Iterator[Holder]:
        """One slot for ``client`` within the block, held by the current task; the block sees a
        CancelledError with ``holder.cut`` set if another client takes it over."""
        task = asyncio.current_task()
        assert task is not None
        holder = Holder(task)
        self.take(client)
        self.holders.setdefault(client, deque()).append(holder)
        try:
            yield holder
        finally:
            self.give_back(client)
            queue = self.holders.get(client)
            if queue is not None and holder in queue:
                queue.remove(holder)
                if not queue:
                    del self.holders[client]


def client_network(address: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """What a client address counts as: its IPv6 /64 (one subscriber's, usually), its IPv4
    address or the network of ``ipv4_prefix``. Anything that is not an address (a made-up
    X-Forwarded-For hop) is marked as such, so no header can name an identity of the service's
    own (the job queue's)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"not-an-address:{address}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if prefix >= ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


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
