"""Two layouts of the service side by side: memory, cold start, throughput, paste-back latency.

    git worktree add /tmp/toonify-before <commit>          # the layout to compare with
    python -m benchmarks.layout --before /tmp/toonify-before [--rounds 2]
    python -m benchmarks.layout --before-env TOONIFY_PREPROCESS_WORKERS=2 \
        TOONIFY_PREPROCESS_THREADS=1                       # this tree, two process layouts

Each round starts `bentoml serve service:Toonify` from each tree in turn (same interpreter, same
model store, same machine) and measures: cold start (process start to /readyz 200), RSS of all
its processes idle and at saturation, images/s at saturation (8 clients) with the offline default
and with AnimeGANv3 (if ../shared/models has it), and the median latency of paste_back on a
12 MP phone JPEG. Medians over rounds; the ratio is this tree over the other.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-layout-")

import httpx  # noqa: E402
import psutil  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from loadtest.photos import ASSETS, phone_jpeg  # noqa: E402
from model_store.build import build_defaults, import_generator  # noqa: E402
from tools.machine import describe_cpu  # noqa: E402
from tools.served import Served  # noqa: E402
from toonify.generation.signature import GeneratorSignature  # noqa: E402

ANIMEGAN = ASSETS / "animeganv3_tiny_cute.onnx"


def processes(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss_mb(pid: int) -> float:
    total = 0
    for process in processes(pid):
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, rss_mb(self.pid))


def start(tree: Path, model: str, settings: dict[str, str]) -> tuple[Served, float]:
    """`bentoml serve` of one tree, and its cold start: process start to the first /readyz 200."""
    env = {**settings, "TOONIFY_GENERATOR_MODEL": model, "PYTHONPATH": str(tree)}
    log = Path(tempfile.mkdtemp()) / "serve.log"
    started = time.perf_counter()
    server = Served(env, log, cwd=tree)
    return server, time.perf_counter() - started


def saturate(url: str, photo: bytes, images: int, clients: int) -> float:
    with httpx.Client(base_url=url, timeout=300) as client:
        client.post("/toonify", content=photo).raise_for_status()
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            statuses = list(
                pool.map(
                    lambda _: client.post("/toonify", content=photo).status_code, range(images)
                )
            )
        seconds = time.perf_counter() - started
    assert statuses == [200] * images, statuses
    return images / seconds


def measure(
    tree: Path, settings: dict[str, str], photo: bytes, phone: bytes, images: int, learned: bool
) -> dict:
    figures = {}
    instance, figures["cold_start_s"] = start(tree, "toon-filter:latest", settings)
    try:
        httpx.post(f"{instance.url}/toonify", content=photo, timeout=300).raise_for_status()
        time.sleep(2)
        figures["rss_idle_mb"] = rss_mb(instance.process.pid)
        figures["processes"] = len(processes(instance.process.pid))
        peak = PeakRss(instance.process.pid)
        peak.start()
        figures["images_per_s_offline"] = saturate(instance.url, photo, images, 8)
        peak.done.set()
        figures["rss_saturated_mb"] = peak.peak
        latencies = []
        for _ in range(5):
            started = time.perf_counter()
            response = httpx.post(
                f"{instance.url}/toonify?paste_back=true", content=phone, timeout=300
            )
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
        figures["paste_back_12mp_p50_s"] = statistics.median(latencies)
    finally:
        instance.stop()
    if learned:
        instance, _ = start(tree, "animeganv3:latest", settings)
        try:
            figures["images_per_s_animeganv3"] = saturate(instance.url, photo, images, 8)
        finally:
            instance.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, default=ROOT, help="the other source tree")
    parser.add_argument("--before-env", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--after-env", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=48)
    args = parser.parse_args()

    build_defaults()
    learned = ANIMEGAN.is_file()
    if learned:
        import_generator(
            ANIMEGAN,
            "animeganv3",
            GeneratorSignature("NHWC", (-1.0, 1.0), 512),
            licence="AnimeGANv3 author's terms: non-commercial use only",
        )
    astronaut = Image.fromarray(skimage.data.astronaut())
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()
    pexels = ASSETS / "faces" / "pexels_two_women_on_phones.jpg"
    phone = phone_jpeg(Image.open(pexels).convert("RGB") if pexels.is_file() else astronaut)

    layouts = {
        "before": (args.before.resolve(), dict(s.split("=", 1) for s in args.before_env)),
        "after": (ROOT, dict(s.split("=", 1) for s in args.after_env)),
    }
    results: dict[str, list[dict]] = {name: [] for name in layouts}
    for round_ in range(args.rounds):
        for name, (tree, settings) in layouts.items():
            results[name].append(measure(tree, settings, photo, phone, args.images, learned))
            print(f"round {round_ + 1} {name}: {results[name][-1]}", flush=True)

    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    print(
        f"\n{describe_cpu()}; {args.rounds} rounds, medians; {args.images} images from 8 "
        "clients at saturation"
    )
    for name, (tree, settings) in layouts.items():
        print(f"{name}: {tree} {' '.join(f'{k}={v}' for k, v in settings.items())}")
    print()
    print("| figure | before | after | after / before |")
    print("|---|---|---|---|")
    for key, before in medians["before"].items():
        after = medians["after"][key]
        print(f"| {key} | {before:.3g} | {after:.3g} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
