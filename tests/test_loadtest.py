"""The load test: shapes as tables, the report's arithmetic, and a real smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from loadtest.day import DAY_HOURS, images_per_hour, users_for
from loadtest.report import capacity_from_steps, compare_degrade, comparison_markdown, summarise

from .conftest import ROOT


def ticks(shape: str, seconds: list[float], **options) -> list:
    """tick() of a shape at given run times, with get_run_time overridden.

    In a subprocess: importing Locust monkey-patches the interpreter with gevent.
    """
    settings = {
        "user_rate": 0.05,
        "rate_scale": 1.0,
        "day_minutes": 10.0,
        "step_rate": 0.5,
        "step_seconds": 30.0,
        "max_rate": 12.0,
        **options,
    }
    script = textwrap.dedent(f"""
        import json, types
        from loadtest.shapes import {shape}
        results = []
        for seconds in {seconds!r}:
            shape = {shape}()
            options = types.SimpleNamespace(**{settings!r})
            shape.runner = types.SimpleNamespace(
                environment=types.SimpleNamespace(parsed_options=options))
            shape.get_run_time = lambda: seconds
            results.append(shape.tick())
        print(json.dumps(results))
    """)
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_day_has_250k_images_and_its_peak_at_lunch():
    hours = np.linspace(0, DAY_HOURS, 22_001)
    rates = np.array([images_per_hour(h) for h in hours])
    assert np.trapezoid(rates, hours) == pytest.approx(250_000, rel=0.01)
    assert rates.max() == 25_000 and 5.5 <= hours[rates.argmax()] <= 7.5
    assert images_per_hour(22.0) == 0 and images_per_hour(-1) == 0


def test_day_shape_turns_the_rate_into_open_users():
    peak_time = 6 / 22 * 600  # hour 6 of a day compressed into 10 minutes
    peak, evening, after = ticks("DayShape", [peak_time, 599, 601])
    users, spawn_rate = peak
    assert users == users_for(25_000 / 3600, 0.05) == 139
    assert spawn_rate >= 20  # the user count follows the rate within a second or two
    assert evening[0] < users / 5
    assert after is None  # switched off at hour 22
    ((half, _),) = ticks("DayShape", [peak_time], rate_scale=0.5)
    assert half == pytest.approx(users / 2, abs=1)


def test_step_shape_climbs_then_stops():
    first, third, after = ticks("StepShape", [5, 65, 24 * 30 + 1])
    assert first[0] == users_for(0.5, 0.05) and third[0] == users_for(1.5, 0.05)
    assert after is None


def record(t, latency, status=200, photo="astronaut.jpg"):
    return {"t": t, "latency": latency, "status": status, "photo": photo, "mode": "default"}


def test_capacity_is_the_last_step_that_kept_up():
    records = []
    for step, (rate, latency, status) in enumerate([(1, 0.5, 200), (2, 0.8, 200), (3, 6.0, 503)]):
        records += [record(step * 10 + i / rate, latency, status) for i in range(rate * 10)]
    capacity, steps = capacity_from_steps(records, 0.0, 10, 1.0, p95_bound=5.0)
    assert capacity == pytest.approx(2.0)
    assert [s["sustained"] for s in steps] == [True, True, False]


def test_summary_counts_rejections_and_no_face_answers():
    records = [record(i * 0.1, 0.3) for i in range(50)]
    records += [record(5 + i * 0.1, 0.02, 503) for i in range(20)]
    records += [record(7, 0.2, 422, photo="coffee-no-face.jpg")]
    samples = [
        {"t": 0, "usd": 0.0, "ok": 0, "gauge": 0, "profile": "p"},
        {"t": 9, "usd": 0.001, "ok": 51, "gauge": 0.02, "profile": "p"},
    ]
    summary = summarise("overload", records, samples, {"bin_seconds": 1.0})
    assert summary["ok"] == 51 and summary["rejected"] == 20
    assert summary["status_counts"] == {"200": 50, "503": 20, "422": 1}
    assert summary["latency_rejected_s"]["p95"] == pytest.approx(0.02)
    assert summary["cost_per_1000_images_usd"] == pytest.approx(1000 * 0.001 / 51, rel=1e-3)
    assert summary["instances_for_25k_per_hour"] >= 1


def overload_run(answered: int, reduced: int, refused: int, cpu_s: float, usd: float) -> dict:
    """The summary of a 10 s overload run: ``answered`` images (``reduced`` of them at the
    reduced level) and ``refused`` 503s, with the server's CPU and bill from its samples."""
    records = [
        record(i * 10 / answered, 0.5) | {"level": "reduced" if i < reduced else "full"}
        for i in range(answered)
    ]
    records += [record(i * 10 / refused, 0.01, 503) for i in range(refused)]
    samples = [
        {"t": 0, "usd": 0.0, "ok": 0, "gauge": 0, "profile": "p", "cpu_s": 100.0},
        {"t": 10, "usd": usd, "ok": answered, "gauge": 0, "profile": "p", "cpu_s": 100.0 + cpu_s},
    ]
    return summarise("overload", sorted(records, key=lambda r: r["t"]), samples, {})


def test_degrade_comparison_takes_medians_and_ratios():
    off = [overload_run(40, 0, 80, cpu_s=19.0, usd=0.0004), overload_run(44, 0, 70, 19.5, 0.0004)]
    on = [overload_run(90, 80, 30, 19.8, 0.0004), overload_run(86, 76, 34, 19.6, 0.0004)]
    assert on[0]["ok_by_level"] == {"full": 10, "reduced": 80}
    assert on[0]["server_cpu_s_per_image"] == pytest.approx(19.8 / 90, abs=1e-4)
    comparison = compare_degrade({"off": off, "on": on})
    assert comparison["off"]["achieved_rate_mean"] == pytest.approx(
        np.median([r["achieved_rate_mean"] for r in off])
    )
    assert comparison["on"]["rejected"] == 32 and comparison["off"]["rejected"] == 75
    assert comparison["ratios"]["answered_images_per_s"] == pytest.approx(
        comparison["on"]["achieved_rate_mean"] / comparison["off"]["achieved_rate_mean"], abs=1e-3
    )
    assert 2.0 < comparison["ratios"]["answered_images_per_s"] < 2.2
    # The same bill over twice the images: half the cost per 1000.
    assert comparison["ratios"]["cost_per_1000_images"] == pytest.approx(42 / 88, abs=2e-3)
    assert comparison["goals_met"] == {
        "answered_images_per_s >= 2x": True,
        "cost per 1000 answered lower": True,
        "fewer refusals": True,
    }
    table = comparison_markdown(comparison, "some CPU")
    assert "Machine: some CPU" in table and "| refused | 75 | 32 | 0.427 |" in table
    short = compare_degrade({"off": off, "on": [overload_run(60, 50, 60, 19.0, 0.0004)]})
    assert short["goals_met"]["answered_images_per_s >= 2x"] is False


def test_smoke_run_against_a_real_service(serve, default_models, tmp_path):
    server = serve()
    run = subprocess.run(
        [sys.executable, "-m", "loadtest", "smoke", "--host", server.url, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    # A 30 s day at 0.15 of the rate offers ~14 uploads (Poisson), 12 MP phone photos included.
    assert 4 <= summary["requests_sent"] <= 40
    assert set(summary["status_counts"]) <= {"200", "422"}
    assert summary["ok"] == summary["requests_sent"]
    assert 0 < summary["latency_ok_s"]["p50"] <= summary["latency_ok_s"]["p95"] < 30
    assert 0 < summary["cost_per_1000_images_usd"] < 1
    assert summary["capacity_is_lower_bound"] is True
    for name in ("rate.png", "latency.png", "cost_memory.png", "report.html"):
        assert (tmp_path / name).stat().st_size > 1000, name
    report = (tmp_path / "summary.md").read_text()
    assert "| capacity_images_per_s |" in report and "| instances_for_25k_per_hour |" in report


def test_smoke_run_with_jobs_every_visitor_gets_a_cartoon(serve, default_models, tmp_path):
    """--jobs: every visitor submits a job and waits for its result; all of them are answered,
    with the wait from submission to result, and the jobs are billed and counted as images."""
    server = serve(max_in_flight=1, degrade="off", queue_dir=str(tmp_path / "queue"))
    run = subprocess.run(
        [sys.executable, "-m", "loadtest", "smoke", "--host", server.url, "--jobs"]
        + ["--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["jobs_submitted"] == summary["requests_sent"] >= 4
    assert summary["jobs_answered_share"] == 1.0 and summary["jobs_lost"] == 0
    assert summary["wait_s"]["p50"] <= summary["wait_s"]["max"] < 120
    assert 0 < summary["cost_per_1000_images_usd"] < 1  # job images counted in /metrics
