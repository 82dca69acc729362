"""What the instance is billed, live: every request metered from arrival to the end of its answer
(Cloud Run bills that time), and a clock that accrues every second while the instance runs.

The price profile is the settings' (``TOONIFY_COST_*``, toonify/cost.py). /toonify and jobs are
billed and counted here alike.
"""

from __future__ import annotations

import asyncio

from .. import metrics
from ..cost import BillingMeter, Charge, RollingCost, price_profile
from ..errors import outcome
from ..settings import Settings


class Billing:
    def __init__(self, settings: Settings) -> None:
        self.profile = price_profile(settings.cost)
        self.meter = BillingMeter(self.profile, settings.billed_vcpu, settings.billed_memory_gib)
        self.recent_cost = RollingCost(settings.cost_window_s)
        self._clock: asyncio.Task | None = None

    def started(self) -> None:
        """A request (or a job's run) began."""
        self._bill(self.meter.started())

    def finished(self, images: int = 0) -> None:
        """It ended, with ``images`` answered."""
        self._bill(self.meter.finished(), images)

    def answered(self, status: int, code: str | None, level: str | None) -> None:
        """A /toonify or a job's run ended with ``status`` (``code`` for an error; the level it
        was answered at): billed, and counted by outcome and level, in one place for both."""
        ok = status < 400
        self.finished(images=1 if ok else 0)
        if ok and level:
            metrics.answered_images.labels(level).inc()
        if code != "client_gone":  # nobody was there to answer
            metrics.images.labels(outcome(status, code)).inc()

    def start_clock(self) -> None:
        """Accrue every second while the app runs (with the app's lifespan)."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(1.0)
                self._bill(self.meter.tick())

        self._clock = asyncio.create_task(tick())

    def stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()

    def _bill(self, charge: Charge, images: int = 0) -> None:
        name = self.profile.name
        metrics.billed_seconds.labels(name).inc(charge.seconds)
        metrics.billed_usd.labels(name).inc(charge.usd)
        self.recent_cost.add(charge.usd, images)
        metrics.cost_per_1000_images_usd.labels(name).set(self.recent_cost.per_1000_images())
