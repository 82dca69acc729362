"""A normal user beside cheap attacks from one address: what each attack costs everyone else.

    python -m benchmarks.attacks [--seconds 20]

Starts one `bentoml serve` of the offline default on its default bounds. For each scenario (no
attack first, as the baseline), a normal user on 127.0.0.1 uploads a photo again and again while
the attack runs from 127.0.0.2, and this prints: the user's answers, the share that were toons at
the full level, their median server-side time (Server-Timing, summed) and its ratio to the
baseline, and the entry worker's and the instance's memory before and at their peak.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-attacks-")

import psutil
import skimage.data
from PIL import Image

from loadtest.photos import phone_jpeg
from model_store.build import build_defaults
from tools.attacks import (
    attacking,
    junk_flood,
    median_server_s,
    normal_user,
    served_at_full_level,
    stalled_upload,
    unread_answers,
)
from tools.machine import describe_cpu
from tools.served import Served

PASTE_PNG = "/toonify?paste_back=true&format=png"


def rss_mb(process: psutil.Process, with_children: bool = False) -> float:
    processes = [process, *process.children(recursive=True)] if with_children else [process]
    total = 0
    for each in processes:
        try:
            total += each.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def entry_worker(server: Served) -> psutil.Process:
    for process in psutil.Process(server.process.pid).children(recursive=True):
        arguments = process.cmdline()
        if "--service-name" in arguments:
            if arguments[arguments.index("--service-name") + 1] == "toonify":
                return process
    raise RuntimeError("no entry worker")


def run(server: Served, photo: bytes, seconds: float, start: Callable[[], Callable[[], None]]):
    """The user's answers and the peak memory while the attack ``start()`` starts runs;
    ``start`` returns what ends it."""
    entry, root = entry_worker(server), psutil.Process(server.process.pid)
    before = (rss_mb(entry), rss_mb(root, with_children=True))
    peak = list(before)
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_mb(entry))
            peak[1] = max(peak[1], rss_mb(root, with_children=True))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    end = start()
    try:
        answers = normal_user(server.url, photo, seconds)
    finally:
        end()
        sampling.set()
        sampler.join()
    time.sleep(3)  # the attack's connections wind down before the next scenario
    return answers, before, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    build_defaults()
    astronaut = Image.fromarray(skimage.data.astronaut())
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG", quality=90)
    photo, phone = buffer.getvalue(), phone_jpeg(astronaut)
    log = Path(tempfile.mkdtemp()) / "bentoml.log"
    server = Served({}, log)

    def threads(count: int, make: Callable) -> Callable[[], Callable[[], None]]:
        def start() -> Callable[[], None]:
            stop, _ = attacking(count, make(server.url))
            return stop.set

        return start

    def unread(count: int) -> Callable[[], Callable[[], None]]:
        def start() -> Callable[[], None]:
            sockets = []

            def send() -> None:
                sockets.extend(unread_answers(server.url, PASTE_PNG, phone, count))

            threading.Thread(target=send, daemon=True).start()

            def end() -> None:
                for sock in list(sockets):
                    sock.close()

            return end

        return start

    junk: list[int] = []
    scenarios = {
        "no attack": lambda: lambda: None,
        "64 stalled uploads": threads(64, stalled_upload),
        "500 stalled uploads": threads(500, stalled_upload),
        "40 loops of 5-byte junk": threads(40, lambda url: junk_flood(url, junk)),
        "40 unread 12 MP PNG answers": unread(40),
        "400 unread 12 MP PNG answers": unread(400),
    }
    try:
        # The same heavy work once, read, so the baseline holds its working memory.
        import httpx

        httpx.post(f"{server.url}{PASTE_PNG}", content=phone, timeout=120)
        rows = []
        baseline = None
        for name, start in scenarios.items():
            answers, before, peak = run(server, photo, args.seconds, start)
            median = median_server_s(answers)
            baseline = baseline or median
            rows.append((name, answers, median, before, peak))
            print(f"{name}: {len(answers)} answers", flush=True)
    finally:
        server.stop()
    print(f"\n{describe_cpu()}; {args.seconds:.0f} s per scenario; offline default, default bounds")
    print("normal user on 127.0.0.1, attacker on 127.0.0.2\n")
    print(
        "| scenario | user's answers | toons at full level | median server s | vs no attack "
        "| entry MB before -> peak | instance MB before -> peak |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, answers, median, before, peak in rows:
        print(
            f"| {name} | {len(answers)} | {served_at_full_level(answers):.0%} | {median:.3f} "
            f"| {median / baseline:.2f} | {before[0]:.0f} -> {peak[0]:.0f} "
            f"| {before[1]:.0f} -> {peak[1]:.0f} |"
        )
    if junk:
        print(f"\njunk bodies answered: {len(junk)}, statuses {sorted(set(junk))}")


if __name__ == "__main__":
    main()
