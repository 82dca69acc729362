"""What large job submissions cost everyone else: /readyz and a normal /toonify while four
clients push 12 MB PNGs into /jobs.

    python -m benchmarks.job_intake [--before TREE] [--clients 4] [--seconds 15]

For another tree (``--before``, as it is) and then this one, one `bentoml serve` of the offline
default: first idle, then while ``--clients`` clients (127.0.0.2-5) each submit a 12 MB PNG to
``POST /jobs/raw`` one after another for ``--seconds``, a prober (127.0.0.20) asks ``/readyz``
every 50 ms and a normal user (127.0.0.1) sends the astronaut to ``/toonify`` one request after
another. Prints /readyz's p50/p99/max and the user's p50/p95, idle and loaded, and the
submissions answered per second by status.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-job-intake-")

import httpx
import numpy as np
import skimage.data
from PIL import Image

from model_store.build import build_defaults
from tools.machine import describe_cpu
from tools.served import ROOT, Served

USER, PROBER = "127.0.0.1", "127.0.0.20"
# Each pushing client is one address: past the bound meant for one real client.
MANY_JOBS = {"TOONIFY_QUEUE_MAX_JOBS_PER_CLIENT": "1000000"}


def client(url: str, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, transport=transport, timeout=120)


def big_png(megabytes: float = 12.0) -> bytes:
    """The astronaut at 2048 px with noise that PNG cannot compress away: about 12 MB."""
    rng = np.random.default_rng(0)
    face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((2048, 2048)))
    noisy = np.clip(face.astype(np.int16) + rng.integers(-64, 65, face.shape), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(noisy.astype(np.uint8)).save(buffer, "PNG", compress_level=1)
    photo = buffer.getvalue()
    assert len(photo) > megabytes * 0.8e6, len(photo)
    return photo


def p(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def push(url: str, address: str, big: bytes, stop, answered) -> None:
    """One client submitting ``big`` to /jobs/raw, one after another, until ``stop``."""
    with client(url, address) as http:
        while not stop.is_set():
            status = http.post("/jobs/raw", content=big).status_code
            with answered.get_lock():
                answered[0 if status == 202 else 1] += 1


def probe(url: str, seconds: float, photo: bytes, pushers: list[str], big: bytes) -> dict:
    """/readyz and the user's latencies for ``seconds``, with ``pushers`` submitting ``big``.
    The pushers are processes of their own: sending 12 MB bodies from this process would hold
    its GIL against the prober's own timing."""
    stop = threading.Event()
    readyz: list[float] = []
    user: list[float] = []
    context = multiprocessing.get_context("spawn")
    stop_pushing, answered = context.Event(), context.Array("i", 2)

    def prober() -> None:
        with client(url, PROBER) as http:
            while not stop.is_set():
                started = time.perf_counter()
                assert http.get("/readyz").status_code == 200
                readyz.append(time.perf_counter() - started)
                stop.wait(0.05)

    def normal_user() -> None:
        with client(url, USER) as http:
            while not stop.is_set():
                started = time.perf_counter()
                status = http.post("/toonify", content=photo).status_code
                if status == 200:
                    user.append(time.perf_counter() - started)

    processes = [
        context.Process(target=push, args=(url, address, big, stop_pushing, answered))
        for address in pushers
    ]
    for process in processes:
        process.start()
    threads = [threading.Thread(target=prober), threading.Thread(target=normal_user)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    stop_pushing.set()
    for each in [*threads, *processes]:
        each.join()
    counts = Counter({202: answered[0], "other": answered[1]})
    return {"readyz": readyz, "user": user, "answered": +counts, "seconds": seconds}


def measure(name: str, tree: Path, args, photo: bytes, big: bytes, **settings: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix=f"toonify-job-intake-{name}-"))
    env = {"TOONIFY_QUEUE_DIR": str(folder / "queue"), **settings}
    server = Served(env, folder / "bentoml.log", cwd=tree)
    pushers = [f"127.0.0.{2 + i}" for i in range(args.clients)]
    try:
        probe(server.url, 5, photo, [], big)  # warm
        idle = probe(server.url, args.seconds, photo, [], big)
        loaded = probe(server.url, args.seconds, photo, pushers, big)
    finally:
        server.stop()
    for label, run in (("idle", idle), (f"{args.clients} pushing", loaded)):
        ready, user = run["readyz"], run["user"]
        rates = ", ".join(
            f"{status}: {count / run['seconds']:.1f}/s" for status, count in run["answered"].items()
        )
        print(
            f"| {name} | {label} | {statistics.median(ready) * 1000:.1f} | "
            f"{p(ready, 99) * 1000:.1f} | {max(ready) * 1000:.1f} | "
            f"{statistics.median(user):.3f} | {p(user, 95):.3f} | {rates or '-'} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="another tree, run first as it is")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    print(describe_cpu(), flush=True)
    build_defaults()
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=90)
    photo, big = buffer.getvalue(), big_png()
    print(f"pushed: a {len(big) / 1e6:.1f} MB PNG (2048 x 2048) per submission")
    print(
        "| tree | load | /readyz p50 ms | p99 ms | max ms | /toonify p50 s | p95 s | "
        "submissions answered |"
    )
    print("|---|---|---|---|---|---|---|---|")
    if args.before:  # as it is: an earlier tree may not know the setting (nor have the bound)
        measure("before", args.before, args, photo, big)
    measure("after", ROOT, args, photo, big, **MANY_JOBS)


if __name__ == "__main__":
    main()
