"""What a draining job backlog costs a normal /toonify, and what a status poll costs the entry.

    python -m benchmarks.queue_budget [--before TREE] [--running 2,1] [--jobs 1000] [--seconds 30]

For another tree (``--before``, as it is) and each ``TOONIFY_QUEUE_MAX_RUNNING``, one
`bentoml serve` of the offline default: a normal user on 127.0.0.1 sends
the astronaut to ``/toonify`` one request after another, first on the idle instance, then while
one client (127.0.0.2) has ``--jobs`` astronaut jobs draining and eight others (127.0.0.3-10)
poll a job's status every half second. Prints the user's p50/p95 (client side) and the ratio to
its idle p50, the status polls' p50, and the jobs finished per second.

Then, with ``TOONIFY_QUEUE_MAX_RUNNING=0`` (nothing drains), ``--waiting`` small jobs are
submitted and polled: the entry worker's CPU per status poll (from /proc) and the poll's p50.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-queue-budget-")

import httpx
import psutil
import skimage.data
from PIL import Image

from model_store.build import build_defaults
from tools.machine import describe_cpu
from tools.served import ROOT, Served

USER, SUBMITTER = "127.0.0.1", "127.0.0.2"
POLLERS = [f"127.0.0.{i}" for i in range(3, 11)]
# The submitter is one client with thousands of jobs: past the bound meant for one real client.
ONE_CLIENT = {"TOONIFY_QUEUE_MAX_JOBS_PER_CLIENT": "1000000"}


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def client(url: str, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, transport=transport, timeout=120)


def user_latencies(url: str, photo: bytes, seconds: float) -> list[float]:
    latencies = []
    ends = time.monotonic() + seconds
    with client(url, USER) as user:
        while time.monotonic() < ends:
            started = time.perf_counter()
            assert user.post("/toonify", content=photo).status_code == 200
            latencies.append(time.perf_counter() - started)
    return latencies


def submit(url: str, photo: bytes, count: int, address: str = SUBMITTER) -> list[dict]:
    """``count`` jobs, each sent again after its Retry-After while the instance is busy."""
    refusals: Counter = Counter()

    def one(submitter: httpx.Client) -> dict:
        while True:
            answer = submitter.post("/jobs/raw", content=photo)
            if answer.status_code == 202:
                return answer.json()
            assert answer.status_code == 503, answer.text
            refusals[answer.json()["error"]] += 1
            time.sleep(float(answer.headers.get("retry-after", 1)))

    with client(url, address) as submitter, ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda _: one(submitter), range(count)))
    if refusals:
        print(f"  (submissions refused for a while and sent again: {dict(refusals)})")
    return jobs


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def drain(args, running: int | None, photo: bytes) -> dict:
    """``running`` None: the tree given as ``--before``, as it is."""
    if running is None:
        server = serve("before", tree=args.before)
    else:
        server = serve(f"running-{running}", TOONIFY_QUEUE_MAX_RUNNING=str(running), **ONE_CLIENT)
    try:
        user_latencies(server.url, photo, 5)  # warm
        idle = user_latencies(server.url, photo, args.seconds / 2)
        jobs = submit(server.url, photo, args.jobs)
        stop, polls = threading.Event(), []

        def poll(address: str, job: dict) -> None:
            with client(server.url, address) as poller:
                while not stop.is_set():
                    started = time.perf_counter()
                    poller.get(job["status_url"])
                    polls.append(time.perf_counter() - started)
                    stop.wait(0.5)

        pollers = [
            threading.Thread(target=poll, args=(address, jobs[-1 - i]))
            for i, address in enumerate(POLLERS)
        ]
        for thread in pollers:
            thread.start()
        done_before = done_jobs(server.url)
        started = time.monotonic()
        busy = user_latencies(server.url, photo, args.seconds)
        rate = (done_jobs(server.url) - done_before) / (time.monotonic() - started)
        stop.set()
        for thread in pollers:
            thread.join()
    finally:
        server.stop()
    return {
        "running": running,
        "idle_p50": statistics.median(idle),
        "busy_p50": statistics.median(busy),
        "busy_p95": p(busy, 95),
        "poll_p50": statistics.median(polls),
        "jobs_per_s": rate,
    }


def done_jobs(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith('toonify_jobs_total{outcome="done"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def entry_worker(server: Served) -> psutil.Process:
    for process in psutil.Process(server.process.pid).children(recursive=True):
        arguments = process.cmdline()
        if (
            "--service-name" in arguments
            and "toonify" == arguments[arguments.index("--service-name") + 1]
        ):
            return process
    raise SystemExit("no entry worker")


def waiting_polls(args) -> str:
    server = serve("waiting", TOONIFY_QUEUE_MAX_RUNNING="0", **ONE_CLIENT)
    try:
        small = jpeg(Image.fromarray(skimage.data.astronaut()).resize((96, 96)))
        jobs = submit(server.url, small, args.waiting)
        entry, latencies = entry_worker(server), []
        with client(server.url, USER) as poller:
            poller.get(jobs[-1]["status_url"])
            before = sum(entry.cpu_times()[:2])
            for index in range(args.polls):
                started = time.perf_counter()
                status = poller.get(jobs[-1 - index % 100]["status_url"]).json()
                latencies.append(time.perf_counter() - started)
            cpu = sum(entry.cpu_times()[:2]) - before
    finally:
        server.stop()
    assert status["status"] == "queued" and status["position"] >= args.waiting - 100
    return (
        f"{args.waiting} jobs waiting, {args.polls} status polls near the end of the line: "
        f"entry worker CPU {cpu / args.polls * 1000:.2f} ms per poll, "
        f"poll p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {p(latencies, 99) * 1000:.2f} ms (client side, loopback)"
    )


def serve(name: str, tree: Path = ROOT, **env: str) -> Served:
    """An instance with a job store of its own (the default folder is shared by every instance
    on the machine, and keeps answers an hour)."""
    folder = Path(tempfile.mkdtemp(prefix=f"toonify-queue-budget-{name}-"))
    env = {"TOONIFY_QUEUE_DIR": str(folder / "queue"), **env}
    return Served(env, folder / "bentoml.log", cwd=tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--running", default="2,1")
    parser.add_argument("--before", type=Path, help="another tree, run first as it is")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=1000)
    args = parser.parse_args()
    print(describe_cpu(), flush=True)
    build_defaults()
    photo = jpeg(Image.fromarray(skimage.data.astronaut()))
    print(
        "| jobs running at most | idle p50 s | p50 s while draining | x idle | p95 s | status "
        "poll p50 ms | jobs/s |"
    )
    print("|---|---|---|---|---|---|---|")
    before = [None] if args.before else []
    for running in before + [int(r) for r in args.running.split(",") if r]:
        r = drain(args, running, photo)
        name = running if running is not None else args.before
        print(
            f"| {name} | {r['idle_p50']:.3f} | {r['busy_p50']:.3f} | "
            f"{r['busy_p50'] / r['idle_p50']:.2f} | {r['busy_p95']:.3f} | "
            f"{r['poll_p50'] * 1000:.1f} | {r['jobs_per_s']:.2f} |",
            flush=True,
        )
    print(waiting_polls(args), flush=True)


if __name__ == "__main__":
    main()
