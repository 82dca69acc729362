"""Metrics and live cost on a real served instance, checked against the client's own clock."""

from __future__ import annotations

import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml
from PIL import Image

from tools.served import scrape

from .conftest import ROOT

GRANULARITY = 0.001  # fine billing units, so the comparison is about overlap, not rounding


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if start > end:
            total += stop - start
        elif stop > end:
            total += stop - end
        end = max(end, stop)
    return total


@pytest.fixture(scope="module")
def metered(serve, default_models):
    return serve(preprocess_workers=2, cost_granularity_s=GRANULARITY, cost_profile="cloudrun-2020")


@pytest.fixture(scope="module")
def traffic(metered, astronaut):
    """Bursts of overlapping requests with idle gaps between them; returns what the client saw."""
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()
    intervals: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    with httpx.Client(base_url=metered.url, timeout=120, limits=limits) as client:
        with ThreadPoolExecutor(8) as pool:  # open the 8 connections before measuring
            list(pool.map(lambda _: client.get("/livez"), range(8)))
        before = scrape(metered.url)

        def post(params: str) -> int:
            started = time.monotonic()
            response = client.post(f"/toonify{params}", content=photo)
            intervals.append((started, time.monotonic()))
            return response.status_code

        statuses = []
        with ThreadPoolExecutor(8) as pool:
            for burst in range(3):
                statuses += list(pool.map(post, [""] * 7 + ["?paste_back=true"] * (burst == 0)))
                time.sleep(1.5)
    time.sleep(1.5)  # let the billing clock tick past the last request
    return before, scrape(metered.url), intervals, statuses


def delta(before: dict, after: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_billed_seconds_match_the_clients_own_timestamps(traffic):
    before, after, intervals, statuses = traffic
    assert all(status == 200 for status in statuses)
    expected = union_seconds(intervals)
    billed = delta(before, after, 'toonify_billed_seconds_total{profile="cloudrun-2020"}')
    assert billed == pytest.approx(expected, rel=0.05)
    assert billed < 0.8 * sum(stop - start for start, stop in intervals)  # overlaps billed once
    usd = delta(before, after, 'toonify_billed_usd_total{profile="cloudrun-2020"}')
    assert usd == pytest.approx(billed * (2 * 0.000024 + 4 * 0.0000025) + len(intervals) * 4e-7)


def test_live_cost_gauge_equals_the_recording_rule_formula(traffic):
    before, after, intervals, _ = traffic
    ok = delta(before, after, 'toonify_images_total{outcome="ok"}')
    usd = delta(before, after, 'toonify_billed_usd_total{profile="cloudrun-2020"}')
    gauge = after['toonify_cost_per_1000_images_usd{profile="cloudrun-2020"}']
    assert ok == len(intervals)
    assert gauge == pytest.approx(1000 * usd / ok, rel=0.05)


def test_stage_histograms_count_every_image(traffic):
    before, after, intervals, _ = traffic
    images = len(intervals)
    for stage in ("decode", "orient", "detect", "align", "generator_queue", "generate", "encode"):
        key = f'toonify_stage_seconds_count{{stage="{stage}"}}'
        assert delta(before, after, key) == images, stage
    assert delta(before, after, 'toonify_stage_seconds_count{stage="paste_back"}') == 1
    assert delta(before, after, "toonify_faces_total") == images
    batches = delta(before, after, "toonify_generator_batch_size_count")
    assert delta(before, after, "toonify_generator_batch_size_sum") == images
    assert 1 <= batches <= images
    assert after["toonify_requests_in_flight"] == 0
    assert after['toonify_ready{service="preprocess"}'] == 1
    assert after['toonify_ready{service="generator"}'] == 1


def test_outcomes_are_counted(metered):
    before = scrape(metered.url)
    httpx.post(f"{metered.url}/toonify", content=b"not an image", timeout=60)
    grey = io.BytesIO()
    Image.new("RGB", (200, 200), "grey").save(grey, "PNG")
    httpx.post(f"{metered.url}/toonify", content=grey.getvalue(), timeout=60)
    after = scrape(metered.url)
    assert delta(before, after, 'toonify_images_total{outcome="bad_input"}') == 1
    assert delta(before, after, 'toonify_images_total{outcome="no_face"}') == 1


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `((?:toonify|bentoml)_[a-z0-9_]+)` \|", text, flags=re.M))


def test_every_documented_metric_is_exported(traffic):
    _, after, _, _ = traffic
    names = documented_metrics()
    assert len(names) >= 15
    exported = {re.split(r"[{]", key)[0] for key in after}
    for name in names:
        assert any(e == name or e.startswith(f"{name}_") for e in exported), name


def test_rules_and_dashboard_use_only_exported_metrics(traffic):
    _, after, _, _ = traffic
    exported = {re.split(r"[{]", key)[0] for key in after}
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "toonify.json").read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(dashboard["panels"]) >= 6
    for expression in expressions:
        for name in re.findall(r"\b(toonify_[a-z0-9_]+)", expression):
            assert name in exported, f"{name} in {expression!r} is not exported"
