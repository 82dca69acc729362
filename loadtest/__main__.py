"""Run a headless Locust load test against the service and write its report.

    python -m loadtest day      [--host URL | --start [--model TAG]] [--rate-scale 1]
                                [--day-minutes 10]
    python -m loadtest capacity [--host URL | --start ...] [--p95-bound 5] [--step-rate 0.5]
                                [--step-seconds 30] [--max-rate 12]
    python -m loadtest overload --rate 12 [--duration-seconds 90] ...
    python -m loadtest overload --start --rate 13 --compare-degrade [--rounds 2]
                                (the same overload with TOONIFY_DEGRADE=off and on, alternating
                                rounds, each on a fresh instance; a comparison with ratios)
    python -m loadtest smoke    (a 30 s day at a low rate, for the test suite)
    python -m loadtest MODE --fleet 2 [--cpus 1]   (any mode against containers behind HAProxy,
                                scraped by Prometheus: `make container` first; loadtest/fleet.py)
    python -m loadtest day --fleet 2 --cpus 1 --jobs --rate-scale 3 [--kill-instance-at 200]
                                (every visitor submits a job and waits for its result, on a
                                shared Redis; one instance killed mid-run; docs/jobs.md)
    python -m loadtest report --out DIR   (rebuild the report from requests.*.jsonl gathered
                                           from distributed Locust workers)

The output folder (--out, default loadtest/out/MODE) gets Locust's CSV and HTML report, every
request as JSON lines, summary.json and summary.md (offered and achieved rate, latency
percentiles, status codes, rejections, cost per 1000 images from /metrics, capacity and the
instances needed for 25,000 images an hour) and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from loadtest.photos import build_pool
from loadtest.report import (
    compare_degrade,
    comparison_markdown,
    load_records,
    markdown,
    plot,
    plot_comparison,
    server_timing,
    summarise,
)
from tools.machine import describe_cpu
from tools.served import Served

ROOT = Path(__file__).resolve().parents[1]
SHAPE_OF = {"day": "day", "smoke": "day", "capacity": "step", "overload": "constant"}
DEFAULT_OUT = ROOT / "loadtest" / "out"


class MetricsSampler(threading.Thread):
    """Reads cost counters from /metrics and the server's memory every few seconds."""

    def __init__(self, url: str, server_pid: int | None, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.url, self.server_pid, self.every = url, server_pid, every
        self.samples: list[dict] = []
        self._done = threading.Event()

    def sample(self) -> None:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        values = {"t": time.time(), "usd": 0.0, "ok": 0.0, "gauge": 0.0, "profile": None}
        for line in text.splitlines():
            if line.startswith("toonify_billed_usd_total"):
                values["usd"] += float(line.rsplit(" ", 1)[1])
                values["profile"] = line.split('profile="')[1].split('"')[0]
            elif line.startswith('toonify_images_total{outcome="ok"}'):
                values["ok"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("toonify_cost_per_1000_images_usd"):
                values["gauge"] = float(line.rsplit(" ", 1)[1])
            elif line.startswith("toonify_queue_depth "):
                values["queue"] = float(line.rsplit(" ", 1)[1])
        values["rss_mb"], values["cpu_s"] = self.server_usage()
        self.samples.append(values)

    def server_usage(self) -> tuple[float | None, float | None]:
        """The server's memory (RSS, MB) and CPU seconds so far, all its processes."""
        if self.server_pid is None:
            return None, None
        try:
            root = psutil.Process(self.server_pid)
            processes = [root, *root.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in processes) / 2**20
            cpu = sum(sum(p.cpu_times()[:2]) for p in processes)
            return rss, cpu
        except psutil.Error:
            return None, None

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.sample()
            except httpx.HTTPError:
                pass
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()


def locust_command(args, url: str, out: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "--host",
        url,
        "--loglevel",
        "WARNING",
        "--only-summary",
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--html",
        str(out / "report.html"),
        "--requests-log",
        str(out / "requests"),
        "--user-rate",
        str(args.user_rate),
    ]
    if args.jobs:
        command += ["--jobs", "--drain-minutes", str(args.drain_minutes)]
    if args.mode in ("day", "smoke"):
        command += ["--rate-scale", str(args.rate_scale), "--day-minutes", str(args.day_minutes)]
    elif args.mode == "capacity":
        command += [
            "--step-rate",
            str(args.step_rate),
            "--step-seconds",
            str(args.step_seconds),
            "--max-rate",
            str(args.max_rate),
        ]
    else:
        command += ["--rate", str(args.rate), "--duration-seconds", str(args.duration_seconds)]
    return command


def run(args) -> dict:
    out = Path(args.out or DEFAULT_OUT / args.mode)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("requests.*.jsonl"):
        old.unlink()
    server = fleet = None
    settings = dict(setting.split("=", 1) for setting in args.env)
    if args.jobs and args.host:
        # A service elsewhere sees every visitor from the load generator's one address: one
        # client, whose waiting jobs would meet the bound meant for one real client (50) at once.
        # (On this machine each visitor sends from a loopback address of its own: locustfile.)
        settings.setdefault("TOONIFY_QUEUE_MAX_JOBS_PER_CLIENT", "1000000")
    if args.fleet:
        from loadtest.fleet import Fleet

        # The load generator is one address: past the balancer's per-source connection limit
        # (64, for real clients) its visitors would be refused by HAProxy, not by the service.
        # With jobs thousands of waiting visitors poll, so the limit is raised unless given.
        fleet = Fleet(
            args.fleet,
            args.cpus,
            queue=args.jobs,
            per_source=args.per_source or (4096 if args.jobs else 64),
            env=settings,
        )
        fleet.start()
        if args.kill_instance_at:  # one instance dies mid-run, as a machine does
            threading.Timer(args.kill_instance_at, fleet.kill, ["instance-0"]).start()
    elif args.start:
        env = {"TOONIFY_GENERATOR_MODEL": args.model} if args.model else {}
        server = Served(env | settings, Path(tempfile.mkdtemp()) / "serve.log")
    url = fleet.url if fleet else server.url if server else args.host
    # Behind a balancer /metrics is whichever instance answers: there, Prometheus reads the fleet.
    sampler = None if fleet else MetricsSampler(url, server.process.pid if server else None)
    if sampler:
        sampler.sample()
        sampler.start()
    flood = JobFlood(url) if args.flood_jobs else None
    try:
        if flood:
            flood.start()
        env = {**os.environ, "LOADTEST_SHAPE": SHAPE_OF[args.mode], "PYTHONPATH": str(ROOT)}
        # Locust exits non-zero when any request failed; rejections count, so that is normal.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(locust_command(args, url, out), cwd=ROOT, env=env, check=False)
        if flood:
            extra_flood = flood.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # What the load generator took of the same cores (the server's share is in the samples).
        extra = {
            "loadgen_cpu_s": round(
                after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1
            )
        }
        # After an overload: how soon a lone request is back to its normal time.
        recovery = probe_recovery(url) if args.mode == "overload" else None
        flooded = extra_flood.get("202", 0) if flood else 0
        extra |= fleet.report(load_records(out), other_jobs=flooded) if fleet else {}
        if flood:
            extra["flood"] = extra_flood
    finally:
        if flood:
            flood.stop()
        if sampler:
            sampler.stop()
        if server:
            server.stop()
        if fleet:
            fleet.stop()
    if recovery:
        extra["recovery"] = recovery
    return write_report(args, out, sampler.samples if sampler else [], extra)


class JobFlood(threading.Thread):
    """One more client, a script at its own address (``FLOOD_ADDRESS``), submitting jobs as fast
    as the service takes them (waiting out each refusal's Retry-After) and never collecting
    them: what the fair line and the per-client bound must keep from the other visitors."""

    FLOOD_ADDRESS = "127.2.0.1"

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.halt = url, threading.Event()
        self.answered: dict[str, int] = {}
        self.photo = next(u for u in build_pool() if u.has_face and u.name.startswith("astronaut"))

    def run(self) -> None:
        transport = httpx.HTTPTransport(local_address=self.FLOOD_ADDRESS)
        with httpx.Client(base_url=self.url, transport=transport, timeout=60) as client:
            while not self.halt.is_set():
                try:
                    answer = client.post("/jobs/raw", content=self.photo.data)
                    status, wait = str(answer.status_code), answer.headers.get("Retry-After")
                except httpx.HTTPError:
                    status, wait = "no answer", "2"
                self.answered[status] = self.answered.get(status, 0) + 1
                if status != "202":
                    self.halt.wait(float(wait or 2))

    def stop(self) -> dict[str, int]:
        self.halt.set()
        if self.is_alive():
            self.join()
        return dict(self.answered)


def probe_recovery(url: str, seconds: int = 15) -> list[tuple[int, float]]:
    """One lone request a second after the load ends, and its server-side time in total."""
    photo = next(upload for upload in build_pool() if upload.name == "astronaut.jpg").data
    probes = []
    started = time.monotonic()
    for second in range(seconds):
        time.sleep(max(0.0, started + second - time.monotonic()))
        response = httpx.post(f"{url}/toonify", content=photo, timeout=120)
        timings = server_timing(response.headers.get("server-timing", ""))
        # The server's arrival-to-answer time ("total"), else its stages summed.
        probes.append((second, round(timings.get("total", sum(timings.values())), 1)))
    return probes


def write_report(args, out: Path, samples: list[dict], extra: dict | None = None) -> dict:
    samples_file = out / "metrics_samples.json"
    if samples:
        samples_file.write_text(json.dumps(samples))
    elif samples_file.is_file():
        samples = json.loads(samples_file.read_text())
    records = load_records(out)
    options = {k: v for k, v in vars(args).items() if k not in ("host", "out", "start")}
    summary = summarise(args.mode, records, samples, options) | (extra or {})
    summary["machine"] = describe_cpu()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    plot(records, samples, out)
    print(markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["day", "capacity", "overload", "smoke", "fleet", "report"])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--host", help="a running service, e.g. http://localhost:3000")
    target.add_argument("--start", action="store_true", help="start `bentoml serve` for the run")
    target.add_argument("--fleet", type=int, help="start N containers behind HAProxy (podman)")
    parser.add_argument("--model", help="with --start: the generator tag (TOONIFY_GENERATOR_MODEL)")
    parser.add_argument("--out", help="output folder (default loadtest/out/MODE)")
    parser.add_argument("--user-rate", type=float, default=0.05, help="uploads/s per Locust user")
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--day-minutes", type=float, default=10.0)
    parser.add_argument("--p95-bound", type=float, default=5.0, help="capacity: p95 seconds")
    parser.add_argument("--step-rate", type=float, default=0.5)
    parser.add_argument("--step-seconds", type=float, default=30.0)
    parser.add_argument("--max-rate", type=float, default=12.0)
    parser.add_argument("--rate", type=float, default=1.0, help="overload: images/s")
    parser.add_argument("--duration-seconds", type=float, default=90.0)
    parser.add_argument("--cpus", type=float, help="fleet: CPUs per container (podman --cpus)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="TOONIFY_X=VALUE",
        help="with --start or --fleet: a setting for the instances (repeatable)",
    )
    parser.add_argument(
        "--compare-degrade",
        action="store_true",
        help="with --start: run with TOONIFY_DEGRADE=off and on, compare",
    )
    parser.add_argument("--rounds", type=int, default=1, help="--compare-degrade: rounds each")
    parser.add_argument(
        "--jobs",
        action="store_true",
        help="every visitor submits a job and waits for it (with --fleet: on a shared Redis)",
    )
    parser.add_argument("--drain-minutes", type=float, default=15.0, help="--jobs: after the day")
    parser.add_argument(
        "--flood-jobs",
        action="store_true",
        help="one more client submits jobs as fast as it is let, from its own address",
    )
    parser.add_argument(
        "--kill-instance-at", type=float, help="--fleet: kill one instance this many s in"
    )
    parser.add_argument(
        "--per-source",
        type=int,
        help="--fleet: HAProxy's connections per source address (64; 4096 with --jobs)",
    )
    args = parser.parse_args(argv)
    if args.mode == "report":
        if not args.out:
            parser.error("report needs --out, the folder holding requests.*.jsonl")
        write_report(args, Path(args.out), samples=[])
        return
    if not (args.host or args.start or args.fleet):
        parser.error("give --host URL, --start or --fleet N")
    if args.mode == "smoke":
        args.rate_scale, args.day_minutes, args.user_rate = 0.15, 0.5, 0.2
    if args.compare_degrade:
        if not args.start:
            parser.error("--compare-degrade starts its own instances: give --start")
        run_degrade_comparison(args)
        return
    run(args)


def run_degrade_comparison(args) -> dict:
    """The same load with the degrade ladder off and on, in alternating rounds (off first), each
    on a fresh instance; each run's report in OUT/degrade-SETTING-ROUND, the comparison in OUT."""
    out = Path(args.out or DEFAULT_OUT / f"{args.mode}-degrade")
    summaries: dict[str, list[dict]] = {"off": [], "on": []}
    first_records: dict[str, list[dict]] = {}
    for round_ in range(1, args.rounds + 1):
        for setting in ("off", "on"):
            folder = out / f"degrade-{setting}-{round_}"
            env = [*args.env, f"TOONIFY_DEGRADE={setting}"]
            variant = argparse.Namespace(**{**vars(args), "out": str(folder), "env": env})
            summaries[setting].append(run(variant))
            if setting not in first_records:  # the plot shows each setting's first round
                first_records[setting] = load_records(folder)
    comparison = compare_degrade(summaries) | {
        "machine": describe_cpu(),
        "options": {k: v for k, v in vars(args).items() if k not in ("host", "out", "start")},
    }
    (out / "summary.json").write_text(json.dumps(comparison, indent=2) + "\n")
    (out / "summary.md").write_text(comparison_markdown(comparison, comparison["machine"]))
    plot_comparison(first_records, out)
    print(comparison_markdown(comparison, comparison["machine"]))
    return comparison


if __name__ == "__main__":
    main()
