"""A spend cap as a fleet size: how many instances a budget in dollars per hour pays for.

    python -m tools.budget --usd-per-hour 0.50 --capacity 4.5 [--reduced-capacity 9]
                             [--profile cloudrun-2020] [--vcpu 2 --memory-gib 4]
                             [--peak-images-per-hour 25000] [--day-scale 3]

The budget defaults to TOONIFY_BUDGET_USD_PER_HOUR. An instance costs the most when it is busy
all the time, so the cap assumes every instance saturated at ``capacity`` images/s (the load
test's figure, docs/loadtest.md): request billing then charges every second of the hour plus
the fee for each request; instance billing charges the hourly price whatever the load. The
answer is Cloud Run's ``maxScale`` and the Kubernetes HPA's ``maxReplicas``: the fleet can never
spend more than the budget, however viral the post. With the degrade ladder (toonify/levels.py)
a saturated instance answers ``reduced_capacity`` images/s at the reduced level: the capped
fleet then serves that many more people instead of refusing them (the worst case counts the
per-request fee at that rate). With jobs (docs/jobs.md) the visitors past the cap wait in line:
``--day-scale S`` replays the 2020 day at S times its rate against the capped fleet and says how
long the queue grows and when it has drained.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

from loadtest.day import DAY_HOURS, images_per_hour
from toonify.cost import PriceProfile, load_profiles, price_profile
from toonify.settings import CostSettings


def saturated_instance_usd_per_hour(
    profile: PriceProfile, vcpu: float, memory_gib: float, images_per_s: float
) -> float:
    """What one instance costs in an hour during which it is never idle."""
    if profile.billing == "instance":
        return profile.hourly_usd
    per_second = vcpu * profile.vcpu_second_usd + memory_gib * profile.gib_second_usd
    requests = images_per_s * 3600
    return 3600 * per_second + requests * profile.per_million_requests_usd / 1e6


@dataclass(frozen=True)
class FleetCap:
    max_instances: int
    instance_usd_per_hour: float  # one saturated instance
    images_per_hour: float  # what the capped fleet can answer at full speed
    reduced_images_per_hour: float  # what it answers saturated, at the ladder's reduced level

    @property
    def worst_case_usd_per_hour(self) -> float:
        return self.max_instances * self.instance_usd_per_hour


def fleet_cap(
    budget_usd_per_hour: float,
    profile: PriceProfile,
    capacity_images_per_s: float,
    vcpu: float = 2.0,
    memory_gib: float = 4.0,
    reduced_capacity_images_per_s: float | None = None,
) -> FleetCap:
    """The most instances whose worst case (all saturated, at the reduced level's rate where
    there is one) stays within the budget."""
    reduced = reduced_capacity_images_per_s or capacity_images_per_s
    if budget_usd_per_hour <= 0 or capacity_images_per_s <= 0 or reduced < capacity_images_per_s:
        raise ValueError("the budget and the capacities must be positive, the reduced one larger")
    one = saturated_instance_usd_per_hour(profile, vcpu, memory_gib, reduced)
    # A hair of tolerance: a budget of exactly N instances' cost pays for N.
    count = math.floor(budget_usd_per_hour / one + 1e-9)
    return FleetCap(count, one, count * capacity_images_per_s * 3600, count * reduced * 3600)


@dataclass(frozen=True)
class DayQueue:
    peak_jobs: float  # the longest the queue gets
    peak_hour: float
    drained_hour: float | None  # when it is empty again after its peak; None: not within the day
    longest_wait_s: float  # the last job in at the peak waits for everything ahead of it


def queue_through_the_day(
    fleet_images_per_hour: float, scale: float = 1.0, step_h: float = 1 / 60
) -> DayQueue:
    """The job queue of a fleet that answers ``fleet_images_per_hour`` while the 2020 day
    arrives at ``scale`` times its rate: what arrives past capacity waits, and drains when the
    rate falls below it."""
    backlog, peak, peak_hour, drained = 0.0, 0.0, 0.0, None
    hour = 0.0
    while hour < DAY_HOURS:
        backlog = max(
            0.0, backlog + (scale * images_per_hour(hour) - fleet_images_per_hour) * step_h
        )
        if backlog > peak:
            peak, peak_hour, drained = backlog, hour, None
        elif peak > 0 and backlog == 0 and drained is None:
            drained = hour
        hour += step_h
    if peak == 0:
        drained = 0.0
    return DayQueue(peak, peak_hour, drained, peak / fleet_images_per_hour * 3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    budget = os.environ.get("TOONIFY_BUDGET_USD_PER_HOUR")
    parser.add_argument(
        "--usd-per-hour",
        type=float,
        default=float(budget) if budget else None,
        required=budget is None,
        help="fleet-wide budget (TOONIFY_BUDGET_USD_PER_HOUR)",
    )
    parser.add_argument(
        "--capacity",
        type=float,
        required=True,
        help="images/s one instance answers at saturation (docs/loadtest.md)",
    )
    parser.add_argument(
        "--reduced-capacity",
        type=float,
        default=None,
        help="images/s one instance answers saturated at the reduced level (docs/loadtest.md)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        choices=sorted(load_profiles()),
        help="price profile (default: TOONIFY_COST_PROFILE or cloudrun-2020)",
    )
    parser.add_argument("--vcpu", type=float, default=2.0)
    parser.add_argument("--memory-gib", type=float, default=4.0)
    parser.add_argument("--peak-images-per-hour", type=float, default=25_000)
    parser.add_argument(
        "--day-scale",
        type=float,
        default=None,
        help="replay the 2020 day at this many times its rate: how the job queue grows and drains",
    )
    parser.add_argument("--queue-max-jobs", type=int, default=10_000, help="TOONIFY_QUEUE_MAX_JOBS")
    args = parser.parse_args(argv)
    profile = load_profiles()[args.profile] if args.profile else price_profile(CostSettings())
    cap = fleet_cap(
        args.usd_per_hour, profile, args.capacity, args.vcpu, args.memory_gib, args.reduced_capacity
    )
    if cap.max_instances == 0:
        print(
            f"error: ${args.usd_per_hour:.2f}/h does not pay for one saturated instance "
            f"(${cap.instance_usd_per_hour:.4f}/h at {profile.name})"
        )
        return 2
    peak_ok = cap.images_per_hour >= args.peak_images_per_hour
    print(
        f"budget ${args.usd_per_hour:.2f}/h at {profile.name}, {args.vcpu:g} vCPU / "
        f"{args.memory_gib:g} GiB, {args.capacity:g} images/s per instance"
    )
    print(f"one saturated instance: ${cap.instance_usd_per_hour:.4f}/h")
    print(f"maxScale (Cloud Run) = maxReplicas (Kubernetes HPA) = {cap.max_instances}")
    print(
        f"worst case: ${cap.worst_case_usd_per_hour:.4f}/h for up to "
        f"{cap.images_per_hour:,.0f} images/h"
    )
    if args.reduced_capacity:
        print(
            f"saturated, at the reduced level: up to {cap.reduced_images_per_hour:,.0f} "
            "images/h for the same worst case"
        )
    if peak_ok:
        verdict = "fits"
    elif args.reduced_capacity and cap.reduced_images_per_hour >= args.peak_images_per_hour:
        verdict = "fits at the reduced level: faces drawn at half size past the full level"
    else:
        verdict = "does not fit: past the cap, uploads get 503 + Retry-After"
    print(f"a peak of {args.peak_images_per_hour:,.0f} images/h {verdict}")
    if args.day_scale:
        served = cap.reduced_images_per_hour if args.reduced_capacity else cap.images_per_hour
        day = queue_through_the_day(served, args.day_scale)
        if day.peak_jobs == 0:
            print(f"the 2020 day at {args.day_scale:g}x: no queue, every visitor answered at once")
        else:
            drained = (
                f"drained by hour {day.drained_hour:.1f}"
                if day.drained_hour is not None
                else "not drained within the day"
            )
            fits = day.peak_jobs <= args.queue_max_jobs
            print(
                f"the 2020 day at {args.day_scale:g}x with jobs: the queue peaks at "
                f"{day.peak_jobs:,.0f} jobs at hour {day.peak_hour:.1f} (a wait of about "
                f"{day.longest_wait_s / 60:.0f} min), {drained}; "
                + (
                    "nobody is turned away"
                    if fits
                    else f"past {args.queue_max_jobs:,} queued jobs, submissions get 503 queue_full"
                )
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
