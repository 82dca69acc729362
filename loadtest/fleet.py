"""Several instances, really: containers behind HAProxy, scraped by Prometheus.

`python -m loadtest MODE --fleet N` starts N containers of the image (`make container`),
each on its own port with ``--cpus`` CPUs where podman can limit them; HAProxy (Debian's) in
front, round robin, health-checked on /readyz, naming the instance that answered in
``X-Served-By``; and Prometheus (Debian's) scraping every instance with
deploy/prometheus/prometheus.yml and evaluating deploy/prometheus/rules.yml. The load test then
runs against the balancer, and the report adds, per instance, what it answered and refused, and
the fleet's cost per 1000 images twice: from Prometheus (the recording rule's expression over the
run) and from the load test's own request log (each instance's busy time, billed as the service
bills it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from tools.containers import IMAGE, image_exists, podman
from tools.served import wait_for_200
from toonify.cost import BillingMeter, cost_per_1000_images, price_profile
from toonify.settings import CostSettings

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 240) -> None:
    try:
        wait_for_200(url, timeout, interval=0.2)
    except TimeoutError as exc:
        raise SystemExit(str(exc)) from None


def haproxy_config(port: int, instances: dict[str, int], per_source: int = 64) -> str:
    servers = "\n".join(
        f"  server {name} 127.0.0.1:{instance_port} check inter 2s fall 2 rise 1"
        for name, instance_port in instances.items()
    )
    # In front of the fleet, what one process cannot hold: headers (and the body's first
    # buffer, which HAProxy waits for before it opens a connection to an instance) within 10 s,
    # at most ``per_source`` connections per source address (past it a JSON 429; the load
    # generator is one address, so this stays above its peak), the client's address passed on.
    limited = '{"error": "overloaded", "detail": "Too many connections from one address; retry."}'
    return f"""global
  maxconn 4096
defaults
  mode http
  option forwardfor
  option http-buffer-request
  timeout connect 5s
  timeout http-request 10s
  timeout client 150s
  timeout server 150s
frontend toonify
  bind 127.0.0.1:{port}
  stick-table type ip size 100k expire 60s store conn_cur
  tcp-request connection track-sc0 src
  http-request return status 429 content-type application/json hdr Retry-After 2 \
    string '{limited}' if {{ sc0_conn_cur gt {per_source} }}
  default_backend instances
backend instances
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  http-response set-header X-Served-By %[srv_name]
{servers}
"""


def prometheus_config(instances: dict[str, int]) -> dict:
    """deploy/prometheus/prometheus.yml, every instance as a target, the rules by full path."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    targets = [f"127.0.0.1:{port}" for port in instances.values()]
    config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
    return config


class Fleet:
    def __init__(
        self,
        instances: int,
        cpus: float | None = None,
        image: str = IMAGE,
        queue: bool = False,
        per_source: int = 64,
        env: dict[str, str] | None = None,
    ) -> None:
        if not image_exists(image):
            raise SystemExit(f"no image {image}: run `make container` first")
        self.image, self.cpus, self.per_source, self.env = image, cpus, per_source, env or {}
        self.redis = None
        if queue:  # one Redis the instances share for jobs (tools/redis_server.py's settings)
            from tools.redis_server import RedisServer

            # Above TOONIFY_QUEUE_MAX_BYTES (2 GiB): the queue is full before Redis is.
            self.redis = RedisServer(maxmemory="3gb")
        self.instances = {f"instance-{i}": free_port() for i in range(instances)}
        self.port, self.prometheus_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = Path(tempfile.mkdtemp(prefix="toonify-fleet-"))
        self.processes: list[subprocess.Popen] = []
        self.names: list[str] = []

    def start(self) -> str:
        limit = ["--cpus", str(self.cpus)] if self.cpus else []
        if self.redis is not None:
            limit += ["-e", f"TOONIFY_QUEUE_URL={self.redis.url}"]
        # HAProxy, on this host, says who each client is (X-Forwarded-For): trusted, so that the
        # instances' fairness counts visitors, not the balancer (docs/deploy.md).
        for name, value in {"TOONIFY_TRUSTED_PROXIES": "127.0.0.1/32", **self.env}.items():
            limit += ["-e", f"{name}={value}"]
        for name, port in self.instances.items():
            container = f"toonify-{name}-{self.port}"
            podman(
                "run",
                "-d",
                "--name",
                container,
                "--network",
                "host",
                *limit,
                "-e",
                f"PORT={port}",
                self.image,
                capture=True,
            )
            self.names.append(container)
        for port in self.instances.values():
            wait_for(f"http://127.0.0.1:{port}/readyz")
        haproxy = self.folder / "haproxy.cfg"
        haproxy.write_text(haproxy_config(self.port, self.instances, self.per_source))
        self._spawn(["haproxy", "-f", str(haproxy), "-db"], "haproxy.log")
        config = self.folder / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(self.instances)))
        self._spawn(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
            "prometheus.log",
        )
        wait_for(f"{self.url}/readyz")
        wait_for(f"http://127.0.0.1:{self.prometheus_port}/-/ready")
        self.watched_from = time.time()  # the window of every figure: from before any request
        self.wait_for_first_scrapes()
        self.started = time.time()
        return self.url

    def wait_for_first_scrapes(self, timeout: float = 60) -> None:
        """Every instance scraped once before the day starts: a counter's increase needs a sample
        from before the first request, or a short day can end between two scrapes unseen."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            scraped = self.query("count(up == 1)", time.time())
            if scraped is not None and scraped >= len(self.instances):
                return
            time.sleep(1)
        raise SystemExit(f"Prometheus did not scrape every instance within {timeout:.0f} s")

    def _spawn(self, command: list[str], log: str) -> None:
        with open(self.folder / log, "wb") as output:
            self.processes.append(
                subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
            )

    def kill(self, name: str, replace_after_s: float = 20.0) -> None:
        """The instance dies at once (SIGKILL), as a machine does; the balancer's health check
        takes it out, and, as a platform replaces a lost instance, it starts again after
        ``replace_after_s`` (its jobs were taken by then by the others, after their claims'
        visibility timeout)."""
        container = f"toonify-{name}-{self.port}"
        podman("kill", container, check=False, capture=True)
        self.killed = (name, time.time())
        time.sleep(replace_after_s)
        podman("start", container, check=False, capture=True)

    def queue_report(self, ended: float) -> dict:
        """The line over the run (Prometheus, every 5 s): its peak, when it emptied, and the
        answers the instances stored against those the visitors got (answered twice: > 0)."""
        answer = httpx.get(
            f"http://127.0.0.1:{self.prometheus_port}/api/v1/query_range",
            params={
                "query": "max(toonify_queue_depth)",
                "start": self.started,
                "end": ended,
                "step": 5,
            },
            timeout=30,
        ).json()["data"]["result"]
        depth = (
            [(float(t) - self.started, float(v)) for t, v in answer[0]["values"]] if answer else []
        )
        report: dict = {}
        if depth and max(v for _, v in depth) > 0:
            peak_at, peak = max(depth, key=lambda sample: sample[1])
            after = [t for t, v in depth if t > peak_at and v == 0]
            report |= {
                "queue_peak": int(peak),
                "queue_peak_at_s": round(peak_at, 1),
                "queue_drained_at_s": round(after[0], 1) if after else None,
            }
        import redis

        # Counted by Redis as each answer is stored, so an instance killed between two scrapes
        # loses nothing from the count.
        stored = redis.Redis.from_url(self.redis.url).get("toonify:answers_kept")
        report["job_answers_stored"] = int(stored or 0)
        window = f"{round(ended - self.watched_from)}s"
        discarded = self.query(
            f'sum(max_over_time(toonify_jobs_total{{outcome="discarded"}}[{window}]))', ended
        )
        report["job_answers_discarded_scraped"] = int(discarded or 0)
        if getattr(self, "killed", None):
            report["killed"] = {
                "instance": self.killed[0],
                "at_s": round(self.killed[1] - self.started, 1),
            }
        return report

    def query(self, expression: str, at: float) -> float | None:
        answer = httpx.get(
            f"http://127.0.0.1:{self.prometheus_port}/api/v1/query",
            params={"query": expression, "time": at},
            timeout=30,
        ).json()
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def report(self, records: list[dict], other_jobs: int = 0) -> dict:
        """Per instance, and the fleet's cost per 1000 images from Prometheus and from the log.

        ``other_jobs``: jobs accepted from outside the visitors' log (``--flood-jobs``), whose
        stored answers are not a visitor answered twice."""
        time.sleep(35)  # two scrapes after the last request
        ended = time.time()
        window = f"{round(ended - self.watched_from)}s"
        rule = PROMETHEUS / "rules.yml"
        expression = next(
            r["expr"]
            for group in yaml.safe_load(rule.read_text())["groups"]
            for r in group["rules"]
            if r.get("record") == "toonify:cost_per_1000_images_usd:5m"
        )
        prometheus = self.query(expression.replace("[5m]", f"[{window}]"), ended)
        per_instance: dict | None = {}
        for name in self.instances:
            mine = [r for r in records if r.get("instance") == name]
            per_instance[name] = {
                "answered": sum(1 for r in mine if r["status"] in (200, 422)),
                "refused": sum(1 for r in mine if r["status"] == 503),
                "usd": billed_usd(mine),
            }
        ok = sum(1 for r in records if r["status"] == 200)
        own = cost_per_1000_images(sum(i["usd"] for i in per_instance.values()), ok)
        queue = self.queue_report(ended) if self.redis is not None else {}
        if queue:
            answered = sum(1 for r in records if r["status"] in (200, 422))
            queue["jobs_answered_twice"] = queue["job_answers_stored"] - answered - other_jobs
            # A visitor's record spans its wait, not an instance's work: Prometheus' figures.
            own, per_instance = 0.0, None
        return queue | {
            "instances": len(self.instances),
            "cpus_per_instance": self.cpus,
            "per_instance": per_instance,
            "unanswered": sum(1 for r in records if r["status"] not in (200, 422, 503)),
            "fleet_cost_per_1000_images_prometheus_usd": prometheus,
            "fleet_cost_per_1000_images_recording_rule_last_5m_usd": self.query(
                "toonify:cost_per_1000_images_usd:5m", ended
            ),
            "fleet_cost_per_1000_images_load_test_usd": round(own, 6) if own else None,
            "prometheus_over_load_test": round(prometheus / own, 3) if prometheus and own else None,
        }

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=30)
        for name in self.names:
            podman("rm", "--force", name, check=False, capture=True)
        if self.redis is not None:
            self.redis.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def billed_usd(records: list[dict]) -> float:
    """What one instance is billed for these requests: the service's own meter, fed the client's
    start and end times (same profile, same instance size)."""
    meter = BillingMeter(price_profile(CostSettings()))
    events = sorted([(r["t"], 0) for r in records] + [(r["t"] + r["latency"], 1) for r in records])
    usd = 0.0
    for when, kind in events:
        usd += (meter.started(when) if kind == 0 else meter.finished(when)).usd
    return usd
