"""A spend cap as a fleet size: how many instances a budget in dollars per hour pays for.

    python -m tools.budget --usd-per-hour 0.50 --capacity 4.5 [--reduced-capacity 9]
                             [--profile cloudrun-2020] [--vcpu 2 --memory-gib 4]
                             [--peak-images-per-hour 25000]

The budget defaults to TOONIFY_BUDGET_USD_PER_HOUR. An instance costs the most when it is busy
all the time, so the cap assumes every instance saturated at ``capacity`` images/s (the load
test's figure, docs/loadtest.md): request billing then charges every second of the hour plus
the fee for each request; instance billing charges the hourly price whatever the load. The
answer is Cloud Run's ``maxScale`` and the Kubernetes HPA's ``maxReplicas``: the fleet can never
spend more than the budget, however viral the post. With the degrade ladder (toonify/levels.py)
a saturated instance answers ``reduced_capacity`` images/s at the reduced level: the capped
fleet then serves that many more people instead of refusing them (the worst case counts the
per-request fee at that rate).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

from toonify.cost import PriceProfile, load_profiles, profile_from_env


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
    args = parser.parse_args(argv)
    profile = load_profiles()[args.profile] if args.profile else profile_from_env()
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
