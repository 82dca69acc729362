"""The container image run as users run it (`make container-test`), where podman is available.

`make container` builds the image; CI builds it before the tests. Without podman, or without the
image, this skips and says why.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from tools.containers import IMAGE, available, image_exists

from .conftest import ROOT

pytestmark = pytest.mark.container


def test_the_image_serves_non_root_read_only_and_drains_on_sigterm():
    missing = available()
    if missing:
        pytest.skip(missing)
    if not image_exists(IMAGE):
        pytest.skip(f"no {IMAGE}: `make container` builds it (CI does, before the tests)")
    run = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "container" / "check.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads((ROOT / "build" / "container-check.json").read_text())
    assert result["user"] == "1034" and result["healthcheck"] == 0
    assert result["answered_in_flight_at_sigterm"] == [200] * 4
    assert result["stop_seconds"] < result["grace_period_s"]


def skip_without_a_fleet() -> None:
    """A fleet needs podman, HAProxy, Prometheus and the built image."""
    missing = available()
    for tool in ("haproxy", "prometheus"):
        if missing is None and shutil.which(tool) is None:
            missing = f"{tool} is not installed (Debian's {tool} package; .ci/run installs it)"
    if missing:
        pytest.skip(missing)
    if not image_exists(IMAGE):
        pytest.skip(f"no {IMAGE}: `make container` builds it (CI does, before the tests)")


def fleet_day(out, *arguments: str) -> dict:
    """`python -m loadtest day --fleet 2 ARGUMENTS`: its summary."""
    run = subprocess.run(
        [sys.executable, "-m", "loadtest", "day", "--fleet", "2", *arguments, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_a_fleet_behind_haproxy_is_scraped_by_prometheus(tmp_path):
    """`python -m loadtest day --fleet 2`, briefly: two containers behind HAProxy (health-checked
    on /readyz), Prometheus scraping both with the project's config and rules."""
    skip_without_a_fleet()
    summary = fleet_day(
        tmp_path, "--rate-scale", "0.1", "--day-minutes", "0.5", "--user-rate", "0.2"
    )
    assert summary["instances"] == 2 and summary["unanswered"] == 0
    answered = [i["answered"] for i in summary["per_instance"].values()]
    assert all(count > 0 for count in answered), summary["per_instance"]  # both took traffic
    assert summary["fleet_cost_per_1000_images_prometheus_usd"] > 0  # the rule saw both


def test_a_fleet_on_redis_answers_every_job_with_an_instance_killed_mid_run(tmp_path):
    """`python -m loadtest day --fleet 2 --jobs --kill-instance-at S`, briefly: every visitor
    submits a job to two containers sharing a Redis; one container is killed (SIGKILL) while
    jobs run and replaced; every job is answered, once."""
    skip_without_a_fleet()
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    summary = fleet_day(
        tmp_path,
        *("--cpus", "1", "--jobs", "--rate-scale", "0.3", "--day-minutes", "0.5"),
        *("--user-rate", "0.2", "--kill-instance-at", "12", "--drain-minutes", "4"),
    )
    assert summary["killed"]["instance"] == "instance-0"
    assert summary["jobs_submitted"] >= 10 and summary["jobs_lost"] == 0
    assert summary["jobs_answered_share"] == 1.0
    assert summary["job_answers_stored"] == summary["jobs_answered"]  # none answered twice
    assert summary["jobs_answered_twice"] == 0


def test_stalled_uploads_against_the_fleet_leave_normal_users_served(astronaut):
    """The attack the balancer exists for: 64 connections from one address that send headers
    and nothing else, against HAProxy in front of two containers. It waits for each upload's
    first buffer before it opens a connection to an instance, so no instance sees them."""
    import io

    from loadtest.fleet import Fleet
    from tools.attacks import attacking, normal_user, served_at_full_level, stalled_upload
    from tools.served import scrape

    skip_without_a_fleet()
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG")
    fleet = Fleet(2, cpus=1)
    try:
        url = fleet.start()
        stop, _ = attacking(64, stalled_upload(url))
        slow_headers: list = []
        probe = threading.Thread(target=lambda: slow_headers.append(headers_trickled(url)))
        probe.start()
        try:
            malformed = raw_answer(url, b"G@T /\x01 HTTP/9\r\n\r\n")
            answers = normal_user(url, buffer.getvalue(), 15)
            probe.join()
            # While the attack goes on, no instance holds one of the stalled uploads.
            receiving = [
                scrape(f"http://127.0.0.1:{port}")["toonify_uploads_receiving"]
                for port in fleet.instances.values()
            ]
        finally:
            stop.set()
    finally:
        fleet.stop()
    assert len(answers) >= 5 and served_at_full_level(answers) >= 0.8, answers
    assert receiving == [0.0, 0.0]
    # What the HTTP layer of an instance would answer in plain text, or wait for without a
    # deadline, the balancer answers first: a malformed request, headers that never end.
    assert malformed.startswith(b"HTTP/1.1 400")
    answer, seconds = slow_headers[0]
    assert answer.startswith(b"HTTP/1.1 408") and seconds < 12, (answer[:40], seconds)


def raw_answer(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def headers_trickled(url: str) -> tuple[bytes, float]:
    """Headers begun and never finished (a byte a second): HAProxy's `timeout http-request`
    (10 s) answers 408; what came back and when."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /toonify HTTP/1.1\r\nHost: x\r\n")
        try:
            for byte in b"X-Slow: " + b"a" * 30:
                sock.sendall(bytes([byte]))
                sock.settimeout(1.0)
                try:
                    answer = sock.recv(65536)
                    if answer:
                        return answer, time.monotonic() - started
                except TimeoutError:
                    pass
        except OSError:
            pass
        return b"", time.monotonic() - started
