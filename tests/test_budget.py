"""The spend cap's arithmetic, and the command that prints it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools.budget import fleet_cap
from toonify.cost import PriceProfile, load_profiles

from .conftest import ROOT


def test_max_scale_is_the_budget_over_a_saturated_instance():
    profile = load_profiles()["cloudrun-2020"]
    # By hand: 2 vCPU x $0.000024 + 4 GiB x $0.0000025 = $0.000058 a second, $0.2088 an hour,
    # plus 4.5 x 3600 = 16,200 requests at $0.40 per million = $0.00648: $0.21528 an hour.
    cap = fleet_cap(0.50, profile, capacity_images_per_s=4.5)
    assert cap.instance_usd_per_hour == pytest.approx(0.21528)
    assert cap.max_instances == 2  # 0.50 / 0.21528 = 2.32
    assert cap.images_per_hour == pytest.approx(2 * 4.5 * 3600)
    assert cap.worst_case_usd_per_hour <= 0.50
    assert fleet_cap(2 * 0.21528, profile, 4.5).max_instances == 2  # exactly two pays for two
    assert fleet_cap(0.20, profile, 4.5).max_instances == 0


def test_the_reduced_level_serves_more_for_the_same_cap():
    """At the ladder's reduced level a saturated instance answers more requests: the worst case
    pays their per-request fee, and the capped fleet holds that many more images."""
    profile = load_profiles()["cloudrun-2020"]
    # $0.2088 an hour of instance time plus 9 x 3600 = 32,400 requests at $0.40 per million.
    cap = fleet_cap(0.50, profile, 4.5, reduced_capacity_images_per_s=9.0)
    assert cap.instance_usd_per_hour == pytest.approx(0.2088 + 0.01296)
    assert cap.max_instances == 2
    assert cap.images_per_hour == pytest.approx(2 * 4.5 * 3600)
    assert cap.reduced_images_per_hour == pytest.approx(2 * 9.0 * 3600)
    assert (
        fleet_cap(2 * 0.22176, profile, 4.5, reduced_capacity_images_per_s=9.0).max_instances == 2
    )
    assert (
        fleet_cap(2 * 0.21528, profile, 4.5, reduced_capacity_images_per_s=9.0).max_instances == 1
    )
    with pytest.raises(ValueError):
        fleet_cap(0.5, profile, 4.5, reduced_capacity_images_per_s=2.0)


def test_hourly_billing_ignores_the_load():
    gpu = PriceProfile(name="gpu", billing="instance", hourly_usd=3.99)
    assert fleet_cap(10.0, gpu, capacity_images_per_s=100).max_instances == 2
    assert fleet_cap(10.0, gpu, capacity_images_per_s=1).max_instances == 2


def test_nonsense_is_refused():
    with pytest.raises(ValueError):
        fleet_cap(0.0, load_profiles()["cloudrun-2020"], 4.5)


@pytest.mark.slow  # a subprocess or a real timeout: `make test`, not test-fast
def test_the_command_prints_max_scale_and_whether_the_peak_fits():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tools.budget", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = run("--usd-per-hour", "0.5", "--capacity", "4.5", "--profile", "cloudrun-2020")
    assert done.returncode == 0, done.stderr
    assert "maxScale (Cloud Run) = maxReplicas (Kubernetes HPA) = 2" in done.stdout
    assert "25,000 images/h fits" in done.stdout
    tight = run("--usd-per-hour", "0.25", "--capacity", "4.5", "--profile", "cloudrun-2020")
    assert "= 1" in tight.stdout and "does not fit" in tight.stdout
    one = run(
        "--usd-per-hour",
        "0.25",
        "--capacity",
        "4.5",
        "--reduced-capacity",
        "9",
        "--profile",
        "cloudrun-2020",
    )
    assert "= 1" in one.stdout and "up to 32,400 images/h for the same" in one.stdout
    assert "25,000 images/h fits at the reduced level" in one.stdout
    poor = run("--usd-per-hour", "0.1", "--capacity", "4.5", "--profile", "cloudrun-2020")
    assert poor.returncode == 2 and "does not pay for one" in poor.stdout


def test_the_days_queue_grows_past_capacity_and_drains_when_the_rate_falls():
    from loadtest.day import DAY_HOURS, images_per_hour
    from tools.budget import queue_through_the_day

    peak_rate = max(images_per_hour(h / 60) for h in range(int(DAY_HOURS * 60)))
    assert queue_through_the_day(peak_rate * 1.01).peak_jobs == 0
    day = queue_through_the_day(peak_rate * 0.8)
    assert day.peak_jobs > 0 and day.drained_hour is not None and day.drained_hour > day.peak_hour
    # At its peak the backlog is everything that arrived past capacity since the queue began.
    step = 1 / 60
    arrived_past = 0.0
    hour = 0.0
    while hour <= day.peak_hour:
        arrived_past = max(0.0, arrived_past + (images_per_hour(hour) - peak_rate * 0.8) * step)
        hour += step
    assert day.peak_jobs == pytest.approx(arrived_past)
    assert day.longest_wait_s == pytest.approx(day.peak_jobs / (peak_rate * 0.8) * 3600)
    # A slower fleet queues more and longer.
    slower = queue_through_the_day(peak_rate * 0.6)
    assert slower.peak_jobs > day.peak_jobs and slower.longest_wait_s > day.longest_wait_s
