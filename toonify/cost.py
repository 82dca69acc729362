"""What serving costs, live: billed seconds and dollars from request start and end events.

Price profiles are data (cost_profiles.json, or TOONIFY_COST_* variables for a custom one, read
with the other settings: ``settings.CostSettings``):

- ``request`` billing (Cloud Run's request-based mode): the instance is billed while at least
  one request is in flight, each busy period rounded up to ``granularity_s``, at
  vCPU-seconds x vCPUs + GiB-seconds x GiB, plus a fee per request. Requests that overlap are
  billed once for the overlap: that is why batching lowers the cost.
- ``instance`` billing (a GPU machine by the hour): billed all the time it runs.
"""

from __future__ import annotations

import collections
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .settings import CostSettings

PROFILES_FILE = Path(__file__).with_name("cost_profiles.json")


@dataclass(frozen=True)
class PriceProfile:
    name: str
    billing: str  # "request" or "instance"
    vcpu_second_usd: float = 0.0
    gib_second_usd: float = 0.0
    per_million_requests_usd: float = 0.0
    hourly_usd: float = 0.0
    granularity_s: float = 0.1
    note: str = ""

    def __post_init__(self) -> None:
        if self.billing not in ("request", "instance"):
            raise ValueError(f"profile {self.name}: billing must be request or instance")


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, PriceProfile]:
    data = json.loads(path.read_text())
    return {name: PriceProfile(name=name, **fields) for name, fields in data.items()}


def price_profile(cost: CostSettings) -> PriceProfile:
    """The profile ``cost`` names (default cloudrun-2020) with its overrides, or ``custom``."""
    overrides = {
        name: value
        for name, value in cost.model_dump(exclude={"profile", "billing"}).items()
        if value is not None
    }
    if cost.profile == "custom":
        return PriceProfile(name="custom", billing=cost.billing or "request", **overrides)
    profiles = load_profiles()
    if cost.profile not in profiles:
        raise ValueError(
            f"unknown cost profile {cost.profile!r}: {', '.join([*profiles, 'custom'])}"
        )
    return PriceProfile(**{**profiles[cost.profile].__dict__, **overrides})


@dataclass(frozen=True)
class Charge:
    seconds: float = 0.0
    usd: float = 0.0


class BillingMeter:
    """Billed time of one instance, from its requests' start and end times (thread-safe)."""

    def __init__(
        self,
        profile: PriceProfile,
        vcpu: float = 2.0,
        memory_gib: float = 4.0,
        clock=time.monotonic,
    ) -> None:
        self.profile = profile
        self.clock = clock
        if profile.billing == "request":
            cpu, memory = profile.vcpu_second_usd, profile.gib_second_usd
            self.usd_per_second = vcpu * cpu + memory_gib * memory
        else:
            self.usd_per_second = profile.hourly_usd / 3600.0
        self.in_flight = 0
        self._busy_since = 0.0
        self._accrued = 0.0  # seconds charged so far in the current busy period
        self._last_tick = clock()
        self._lock = threading.Lock()

    def _time(self, seconds: float) -> Charge:
        return Charge(seconds, seconds * self.usd_per_second)

    def _accrue(self, now: float) -> Charge:
        if self.profile.billing == "instance":
            charge = self._time(max(0.0, now - self._last_tick))
        elif self.in_flight:
            elapsed = now - self._busy_since
            charge = self._time(max(0.0, elapsed - self._accrued))
            self._accrued = max(self._accrued, elapsed)
        else:
            charge = Charge()
        self._last_tick = now
        return charge

    def started(self, now: float | None = None) -> Charge:
        with self._lock:
            now = self.clock() if now is None else now
            charge = self._accrue(now)
            if self.in_flight == 0:
                self._busy_since, self._accrued = now, 0.0
            self.in_flight += 1
            return charge

    def finished(self, now: float | None = None) -> Charge:
        with self._lock:
            now = self.clock() if now is None else now
            charge = self._accrue(now)
            self.in_flight -= 1
            usd = charge.usd + self.profile.per_million_requests_usd / 1e6
            seconds = charge.seconds
            if self.in_flight == 0 and self.profile.billing == "request":
                # The busy period ends: round it up to the billing unit.
                unit = self.profile.granularity_s
                billed = math.ceil(self._accrued / unit - 1e-9) * unit if unit else self._accrued
                seconds += billed - self._accrued
                usd += (billed - self._accrued) * self.usd_per_second
            return Charge(seconds, usd)

    def tick(self, now: float | None = None) -> Charge:
        """Charge the time since the last event (long busy periods, instance billing)."""
        with self._lock:
            return self._accrue(self.clock() if now is None else now)


def cost_per_1000_images(usd: float, images: int) -> float:
    return 1000.0 * usd / images if images else 0.0


class RollingCost:
    """Dollars and images over the last ``window_s`` seconds, for a live cost-per-1000 gauge.

    Kept in one-second buckets, so its memory is bounded by the window whatever the request rate
    (a flood of refusals adds to the current second's bucket, not to a list of events).
    """

    def __init__(self, window_s: float = 300.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._buckets: collections.deque[list] = collections.deque()  # [second, usd, images]
        self._usd, self._images = 0.0, 0  # running totals of the buckets in the window
        self._lock = threading.Lock()

    def add(self, usd: float = 0.0, images: int = 0) -> None:
        with self._lock:
            second = math.floor(self.clock())
            if not self._buckets or self._buckets[-1][0] != second:
                self._buckets.append([second, 0.0, 0])
            self._buckets[-1][1] += usd
            self._buckets[-1][2] += images
            self._usd += usd
            self._images += images

    def per_1000_images(self) -> float:
        with self._lock:
            horizon = self.clock() - self.window_s
            while self._buckets and self._buckets[0][0] + 1 <= horizon:
                _, usd, images = self._buckets.popleft()
                self._usd -= usd
                self._images -= images
            if not self._buckets:
                self._usd = 0.0  # no float residue once the window is empty
            return cost_per_1000_images(self._usd, self._images)
