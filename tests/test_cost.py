"""The cost model against the 2020 bill, overlap, rounding and hourly instances."""

from __future__ import annotations

import pytest

from toonify.cost import (
    BillingMeter,
    PriceProfile,
    RollingCost,
    cost_per_1000_images,
    load_profiles,
    price_profile,
)
from toonify.settings import CostSettings


def run_requests(meter: BillingMeter, intervals: list[tuple[float, float]]) -> tuple[float, float]:
    """Feed start/end events in time order; return billed (seconds, dollars)."""
    events = sorted([(s, 0) for s, _ in intervals] + [(e, 1) for _, e in intervals])
    seconds = usd = 0.0
    for when, kind in events:
        charge = meter.started(when) if kind == 0 else meter.finished(when)
        seconds += charge.seconds
        usd += charge.usd
    return seconds, usd


def test_seed_cost_five_seconds_one_at_a_time_is_29_cents():
    meter = BillingMeter(load_profiles()["cloudrun-2020"], vcpu=2, memory_gib=4)
    intervals = [(i * 10.0, i * 10.0 + 5.0) for i in range(1000)]
    seconds, usd = run_requests(meter, intervals)
    assert seconds == pytest.approx(5000.0)
    assert round(cost_per_1000_images(usd, 1000), 2) == 0.29


def test_overlapping_requests_are_billed_once_for_the_overlap():
    meter = BillingMeter(load_profiles()["cloudrun-2020"])
    seconds, _ = run_requests(meter, [(0.0, 3.0), (1.0, 4.0), (2.0, 2.5), (10.0, 11.0)])
    assert seconds == pytest.approx(4.0 + 1.0)


def test_busy_periods_round_up_to_the_billing_unit():
    meter = BillingMeter(load_profiles()["cloudrun-2020"])
    seconds, usd = run_requests(meter, [(0.0, 0.21), (5.0, 5.3)])
    assert seconds == pytest.approx(0.3 + 0.3)
    assert usd == pytest.approx(0.6 * (2 * 0.000024 + 4 * 0.0000025) + 2 * 0.40 / 1e6)


def test_long_busy_periods_accrue_while_running():
    meter = BillingMeter(load_profiles()["cloudrun-2020"])
    meter.started(0.0)
    assert meter.tick(2.0).seconds == pytest.approx(2.0)
    assert meter.tick(3.5).seconds == pytest.approx(1.5)
    assert meter.finished(3.55).seconds == pytest.approx(0.05 + 0.05)  # rest, rounded to 3.6
    assert meter.tick(100.0).seconds == 0.0  # idle time is free under request billing


def test_hourly_instances_are_billed_all_the_time():
    meter = BillingMeter(load_profiles()["h100-hourly"], clock=lambda: 0.0)
    assert meter.tick(1800.0).usd == pytest.approx(3.99 / 2)
    meter.started(1800.0)
    assert meter.finished(3600.0).usd == pytest.approx(3.99 / 2)


def test_profiles_are_data_and_custom_comes_from_the_environment():
    profiles = load_profiles()
    assert {"cloudrun-2020", "cloudrun-2026", "h100-hourly", "l4-hourly"} <= set(profiles)
    assert price_profile(CostSettings()).name == "cloudrun-2020"
    hourly = CostSettings(profile="h100-hourly", hourly_usd=2.5)
    assert price_profile(hourly).hourly_usd == 2.5
    custom = CostSettings(
        profile="custom", billing="request", vcpu_second_usd=0.00001, granularity_s=1
    )
    assert price_profile(custom) == PriceProfile(
        "custom", "request", vcpu_second_usd=0.00001, granularity_s=1
    )
    with pytest.raises(ValueError, match="unknown cost profile"):
        price_profile(CostSettings(profile="aws-2030"))
    with pytest.raises(ValueError):
        PriceProfile("bad", "by-the-minute")


def test_rolling_cost_forgets_old_events():
    now = [0.0]
    rolling = RollingCost(window_s=60, clock=lambda: now[0])
    rolling.add(usd=1.0, images=1000)
    now[0] = 30.0
    rolling.add(usd=3.0, images=1000)
    assert rolling.per_1000_images() == pytest.approx(2.0)
    now[0] = 75.0
    assert rolling.per_1000_images() == pytest.approx(3.0)
    now[0] = 200.0
    assert rolling.per_1000_images() == 0.0


def test_rolling_cost_memory_is_bounded_by_its_window_not_the_request_rate():
    now = [0.0]
    rolling = RollingCost(window_s=60, clock=lambda: now[0])
    for step in range(200_000):  # 2,000 events a second for 100 s
        now[0] = step / 2000
        rolling.add(usd=0.001, images=1)
    assert rolling.per_1000_images() == pytest.approx(1.0)
    assert len(rolling._buckets) <= 61
