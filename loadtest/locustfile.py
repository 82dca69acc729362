"""Toonify load test: open-model arrivals of real photo uploads, shaped like the 2020 day.

    locust -f loadtest/locustfile.py --host http://localhost:3000        # the day, web UI
    python -m loadtest day --host http://localhost:3000                  # headless, with report

Each simulated user sends an upload every 1/--user-rate seconds on average (Poisson), in a
greenlet of its own, without waiting for earlier answers: the shape sets the user count, so the
offered rate follows the shape whatever the service does. LOADTEST_SHAPE picks the shape
(day, step, constant).

With --jobs every visitor submits a job (POST /jobs/raw) instead, waits out a full queue as its
Retry-After says, and asks for the result as the 202's Retry-After says until it is there; the
request log gets one record per visitor (name "job": from submission to result). After the shape
ends the run goes on, with no new visitors, until every job is answered (at most
--drain-minutes).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import time
from urllib.parse import urlsplit

import gevent
from locust import HttpUser, events, task
from requests.adapters import HTTPAdapter

from loadtest import shapes
from loadtest.photos import build_pool, choose
from loadtest.report import server_timing

# Locust uses the one LoadTestShape subclass it finds in this module's names: bind only that one.
SHAPES = {"day": "DayShape", "step": "StepShape", "constant": "ConstantShape"}


def drained(base: type) -> type:
    class Shape(base):
        """The shape; with --jobs, then no new visitors until every job is answered."""

        def tick(self):
            ticked = super().tick()
            if ticked is not None:
                return ticked
            options = self.runner.environment.parsed_options
            drain_s = options.drain_minutes * 60
            if options.jobs and OUTSTANDING and self.get_run_time() < self.duration + drain_s:
                return 0, shapes.SPAWN_RATE
            return None

    return Shape


Shape = drained(getattr(shapes, SHAPES[os.environ.get("LOADTEST_SHAPE", "day")]))

POOL = build_pool()
# Against a service on this machine each user sends from an address of its own, as visitors do:
# the service's fairness (the line's round robin, each client's bounds) sees each as one client.
VISITOR_ADDRESSES = (
    str(a) for a in itertools.islice(ipaddress.ip_network("127.1.0.0/16"), 1, None)
)
REJECTED = (429, 503)
PASSING = (0, 429, 502, 503, 504)  # --jobs: asked again after Retry-After
OUTSTANDING = 0  # --jobs: visitors whose job is not answered yet
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
    group.add_argument("--jobs", action="store_true", help="every visitor submits a job and waits")
    group.add_argument(
        "--drain-minutes", type=float, default=15.0, help="--jobs: wait for the rest"
    )


@events.test_start.add_listener
def open_log(environment, **_) -> None:
    global _log
    path = environment.parsed_options.requests_log
    if path:
        _log = open(f"{path}.{os.getpid()}.jsonl", "a", buffering=1)


@events.request.add_listener
def log_request(name, response_time, response, start_time, context, exception, **_) -> None:
    if _log is None or name.startswith("/jobs"):  # a job is logged once, as "job", when it ends
        return
    status = getattr(response, "status_code", 0) or context.pop("status", 0)
    record = {"t": start_time, "latency": response_time / 1000.0, "status": status, **context}
    headers = getattr(response, "headers", None) or {}
    # The server's own times: stages of an answer, or the gateway's time for a refusal.
    record["server_ms"] = server_timing(headers.get("Server-Timing", ""))
    if "X-Served-By" in headers:  # behind the fleet's balancer: which instance answered
        record["instance"] = headers["X-Served-By"]
    if "X-Service-Level" in headers:  # the degrade ladder's level that served it
        record["level"] = headers["X-Service-Level"]
    _log.write(json.dumps(record) + "\n")


class FromAddress(HTTPAdapter):
    """Connections from one local address (a visitor of its own, to a service on loopback)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def on_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PhotoUploader(HttpUser):
    """Someone who found the site: uploads a photo, now and then, with some option."""

    def wait_time(self) -> float:
        return random.expovariate(self.environment.parsed_options.user_rate)

    def on_start(self) -> None:
        if on_loopback(self.host):
            self.client.mount("http://", FromAddress(next(VISITOR_ADDRESSES)))
        # Start at a random point of the pacing interval, so new users do not arrive together.
        gevent.sleep(random.uniform(0, 1 / self.environment.parsed_options.user_rate))

    @task
    def upload(self) -> None:
        jobs = self.environment.parsed_options.jobs
        gevent.spawn(self._wait_in_line if jobs else self._send, *choose(POOL, random))

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

    def _wait_in_line(self, upload, options: dict[str, str]) -> None:
        """One visitor's job, as the web page does it: submitted (a busy or unreachable service
        waited out, five times at most), then its result asked for as the service says until it
        is there (through busy answers and a balancer's 502 while an instance is replaced)."""
        global OUTSTANDING
        OUTSTANDING += 1
        started, clock = time.time(), time.perf_counter()
        context = {"photo": upload.name, "mode": "+".join(options) or "default", "job": True}
        status, headers = 0, {}
        try:
            for _ in range(6):
                status, headers, job = self._ask(
                    "post", "/jobs/raw", "/jobs", params=options, data=upload.data
                )
                if status not in PASSING:
                    break
                gevent.sleep(int(headers.get("Retry-After", "5")))
            if status == 202:
                result_url = job["result_url"]
                while True:
                    gevent.sleep(int(headers.get("Retry-After", "2")))
                    status, headers, _ = self._ask("get", result_url, "/jobs/{id}/result")
                    if status not in (202, *PASSING):
                        break
        finally:
            OUTSTANDING -= 1
            context["status"] = status
            if "X-Service-Level" in headers:
                context["level"] = headers["X-Service-Level"]
            events.request.fire(
                request_type="JOB",
                name="job",
                response_time=(time.perf_counter() - clock) * 1000,
                response_length=0,
                response=None,
                context=context,
                exception=None if status in (200, 422) else RuntimeError(f"job ended {status}"),
                start_time=started,
            )

    def _ask(self, method: str, path: str, name: str, **arguments) -> tuple[int, dict, dict]:
        """Status, headers and (for a submission) the job of one request; a connection that
        failed is a 0, to be asked again."""
        try:
            response = getattr(self.client, method)(path, name=name, timeout=120, **arguments)
        except Exception:
            return 0, {"Retry-After": "2"}, {}
        submitted = response.status_code == 202 and method == "post"
        return response.status_code, response.headers, response.json() if submitted else {}


@events.quitting.add_listener
def close_log(**_) -> None:
    if _log is not None:
        _log.close()
