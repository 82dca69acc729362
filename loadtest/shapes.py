"""Load shapes: the 2020 day, a capacity staircase, a constant rate.

Each shape turns run time into an offered arrival rate (images per second). The users are open:
a user count stands for a rate (``user_rate`` requests per second each, sent whether or not
earlier answers came back), so an overloaded service is seen as overloaded.
"""

from __future__ import annotations

import math

from locust import LoadTestShape

from loadtest.day import DAY_HOURS, images_per_hour, users_for

# Users started or stopped per second: more than any shape here changes by in a second, and
# under the 100 above which Locust warns.
SPAWN_RATE = 50


class _OpenShape(LoadTestShape):
    """Base: subclasses give ``rate_at(seconds)`` and ``duration``; tick() turns it into users."""

    def option(self, name: str, default: float) -> float:
        options = getattr(self.runner.environment, "parsed_options", None) if self.runner else None
        return float(getattr(options, name, default) if options else default)

    def rate_at(self, seconds: float) -> float:  # images per second
        raise NotImplementedError

    @property
    def duration(self) -> float:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        now = self.get_run_time()
        if now >= self.duration:
            return None
        users = users_for(self.rate_at(now), self.option("user_rate", 0.05))
        return users, SPAWN_RATE


class DayShape(_OpenShape):
    """The whole day compressed into ``--day-minutes`` (10), at ``--rate-scale`` (1) of its rate."""

    @property
    def duration(self) -> float:
        return self.option("day_minutes", 10.0) * 60.0

    def rate_at(self, seconds: float) -> float:
        hour = seconds / self.duration * DAY_HOURS
        return images_per_hour(hour) / 3600.0 * self.option("rate_scale", 1.0)


class StepShape(_OpenShape):
    """Capacity staircase: ``--step-rate`` more images/s every ``--step-seconds``.

    Up to ``--max-rate``; the runner reads each step's p95 to find the sustainable rate.
    """

    @property
    def duration(self) -> float:
        steps = math.ceil(self.option("max_rate", 12.0) / self.option("step_rate", 0.5))
        return steps * self.option("step_seconds", 30.0)

    def rate_at(self, seconds: float) -> float:
        step = int(seconds // self.option("step_seconds", 30.0)) + 1
        return step * self.option("step_rate", 0.5)


class ConstantShape(_OpenShape):
    """``--rate`` images/s for ``--duration-seconds`` (overload runs, smoke tests)."""

    @property
    def duration(self) -> float:
        return self.option("duration_seconds", 60.0)

    def rate_at(self, seconds: float) -> float:
        return self.option("rate", 1.0)
