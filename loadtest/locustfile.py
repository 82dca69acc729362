"""Toonify load test: open-model arrivals of real photo uploads, shaped like the 2020 day.

    locust -f loadtest/locustfile.py --host http://localhost:3000        # the day, web UI
    python -m loadtest day --host http://localhost:3000                  # headless, with report

Each simulated user sends an upload every 1/--user-rate seconds on average (Poisson), in a
greenlet of its own, without waiting for earlier answers: the shape sets the user count, so the
offered rate follows the shape whatever the service does. LOADTEST_SHAPE picks the shape
(day, step, constant).
"""

from __future__ import annotations

import json
import os
import random

import gevent
from locust import HttpUser, events, task

from loadtest import shapes
from loadtest.photos import build_pool, choose
from loadtest.report import server_timing

# Locust uses the one LoadTestShape subclass it finds in this module's names: bind only that one.
SHAPES = {"day": "DayShape", "step": "StepShape", "constant": "ConstantShape"}
Shape = getattr(shapes, SHAPES[os.environ.get("LOADTEST_SHAPE", "day")])

POOL = build_pool()
REJECTED = (429, 503)
_log = None


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    group = parser.add_argument_group("toonify load shape")
    group.add_argument("--rate-scale", type=float, default=1.0, help="fraction of the day's rate")
    group.add_argument(
        "--day-minutes", type=float, default=10.0, help="the 22-hour day, compressed"
    )
    group.add_argument("--user-rate", type=float, default=0.05, help="uploads/s per user")
    group.add_argument("--rate", type=float, default=1.0, help="constant shape: images/s")
    group.add_argument("--duration-seconds", type=float, default=60.0, help="constant shape")
    group.add_argument("--step-rate", type=float, default=0.5, help="step shape: images/s per step")
    group.add_argument("--step-seconds", type=float, default=30.0, help="step shape")
    group.add_argument("--max-rate", type=float, default=12.0, help="step shape: last step")
    group.add_argument("--requests-log", default="", help="write one JSON line per request here")


@events.test_start.add_listener
def open_log(environment, **_) -> None:
    global _log
    path = environment.parsed_options.requests_log
    if path:
        _log = open(f"{path}.{os.getpid()}.jsonl", "a", buffering=1)


@events.request.add_listener
def log_request(name, response_time, response, start_time, context, exception, **_) -> None:
    if _log is None:
        return
    status = getattr(response, "status_code", 0) or 0
    record = {"t": start_time, "latency": response_time / 1000.0, "status": status, **context}
    headers = getattr(response, "headers", None) or {}
    # The server's own times: stages of an answer, or the gateway's time for a refusal.
    record["server_ms"] = server_timing(headers.get("Server-Timing", ""))
    if "X-Served-By" in headers:  # behind the fleet's balancer: which instance answered
        record["instance"] = headers["X-Served-By"]
    if "X-Service-Level" in headers:  # the degrade ladder's level that served it
        record["level"] = headers["X-Service-Level"]
    _log.write(json.dumps(record) + "\n")


class PhotoUploader(HttpUser):
    """Someone who found the site: uploads a photo, now and then, with some option."""

    def wait_time(self) -> float:
        return random.expovariate(self.environment.parsed_options.user_rate)

    def on_start(self) -> None:
        # Start at a random point of the pacing interval, so new users do not arrive together.
        gevent.sleep(random.uniform(0, 1 / self.environment.parsed_options.user_rate))

    @task
    def upload(self) -> None:
        gevent.spawn(self._send, *choose(POOL, random))

    def _send(self, upload, options: dict[str, str]) -> None:
        context = {"photo": upload.name, "mode": "+".join(options) or "default"}
        with self.client.post(
            "/toonify",
            params=options,
            data=upload.data,
            name="/toonify",
            context=context,
            catch_response=True,
            timeout=120,
        ) as response:
            if response.status_code == 200:
                response.success()
            elif response.status_code == 422 and not upload.has_face:
                response.success()  # "no face" is the right answer for that photo
            elif response.status_code in REJECTED:
                response.failure("rejected: overloaded")
            else:
                response.failure(f"{response.status_code}: {response.text[:120]}")


@events.quitting.add_listener
def close_log(**_) -> None:
    if _log is not None:
        _log.close()
