"""The seed's model (the cost twin) served the 2020 way and our way, side by side.

    python benchmarks/cost_twin.py [--rounds 2] [--images 8] [--concurrency 4]

Registers cost-twin (pix2pixHD, 182,443,267 parameters, seeded random weights: its output is
noise) in a temporary model store, then alternates, round after round, the baseline
(benchmarks/baseline_server.py: one Flask process, one image at a time, default ONNX Runtime
session) and `bentoml serve service:Toonify` on the same model and machine. Per system:
seconds per image (one request alone), CPU seconds per image (all its processes), images/s at
saturation (--concurrency clients), peak RSS of the process running the generator, cold start
(process start to /readyz 200) and cost per 1000 images at the cloudrun-2020 profile (2 vCPU,
4 GiB) from the union of the clients' request intervals. Medians over rounds, with ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-twin-")

import httpx  # noqa: E402
import psutil  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model_store import MODEL_FILE  # noqa: E402
from model_store.build import build_defaults, build_twin  # noqa: E402
from toonify.cost import BillingMeter, load_profiles  # noqa: E402
from toonify.served import free_port  # noqa: E402

PRECISION = os.environ.get("TOONIFY_PRECISION", "bf16")
GOALS = {"usd_per_1000": 0.045, "cold_start_s": 2.0, "generator_peak_rss_mb": 1000.0}


class PeakMemory(threading.Thread):
    """Highest RSS seen of the processes ``select`` returns, sampled every 100 ms."""

    def __init__(self, select) -> None:
        super().__init__(daemon=True)
        self.select, self.peak_mb, self.done = select, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                rss = sum(p.memory_info().rss for p in self.select())
            except psutil.Error:
                continue
            self.peak_mb = max(self.peak_mb, rss / 2**20)


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def start(system: str, model) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    if system == "baseline":
        command = [sys.executable, str(ROOT / "benchmarks" / "baseline_server.py"),
                   model.path_of(MODEL_FILE), "--port", str(port)]  # fmt: skip
        env = os.environ
    else:
        command = [sys.executable, "-m", "bentoml", "serve", "service:Toonify", "--port", str(port)]
        # The twin's output is noise, so the bf16 quality gate (run on real models: AnimeGANv3
        # keeps 52 dB) cannot judge it; it runs at the precision a model that passed would.
        env = {
            **os.environ,
            "TOONIFY_GENERATOR_MODEL": str(model.tag),
            "TOONIFY_PRECISION": PRECISION,
        }
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{system} exited ({process.returncode}) before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url, time.perf_counter() - started
        except httpx.TransportError:
            time.sleep(0.05)


def generator_processes(system: str, pid: int) -> list[psutil.Process]:
    if system == "baseline":
        return [psutil.Process(pid)]
    return [p for p in tree(pid) if "toonify-generator" in " ".join(p.cmdline())]


def measure(system: str, model, photo: bytes, images: int, concurrency: int) -> dict[str, float]:
    process, url, cold_start = start(system, model)
    memory = PeakMemory(lambda: generator_processes(system, process.pid))
    memory.start()
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            client.post("/toonify", content=photo).raise_for_status()  # first-request costs
            alone = []
            for _ in range(3):
                begin = time.perf_counter()
                client.post("/toonify", content=photo).raise_for_status()
                alone.append(time.perf_counter() - begin)
            cpu_before = sum(sum(p.cpu_times()[:2]) for p in tree(process.pid))
            intervals: list[tuple[float, float]] = []

            def post(_: int) -> None:
                begin = time.monotonic()
                client.post("/toonify", content=photo).raise_for_status()
                intervals.append((begin, time.monotonic()))

            begin = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(post, range(images)))
            wall = time.perf_counter() - begin
            cpu = sum(sum(p.cpu_times()[:2]) for p in tree(process.pid)) - cpu_before
    finally:
        memory.done.set()
        for p in reversed(tree(process.pid)):
            p.kill()
        process.wait()
    meter = BillingMeter(load_profiles()["cloudrun-2020"], vcpu=2, memory_gib=4)
    usd = 0.0
    for when, kind in sorted([(s, 0) for s, _ in intervals] + [(e, 1) for _, e in intervals]):
        usd += (meter.started(when) if kind == 0 else meter.finished(when)).usd
    return {
        "seconds_per_image": statistics.median(alone),
        "cpu_seconds_per_image": cpu / images,
        "images_per_s": images / wall,
        "generator_peak_rss_mb": memory.peak_mb,
        "cold_start_s": cold_start,
        "usd_per_1000": 1000 * usd / images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    build_defaults()
    model = build_twin()
    meta = model.info.metadata
    print(f"cost-twin: COST TWIN, {meta['parameters']:,} parameters (output is noise); "
          f"bf16 PSNR vs fp32 on real faces {meta['bf16_psnr_db']} dB")  # fmt: skip
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()

    results: dict[str, list[dict]] = {"baseline": [], "service": []}
    with tqdm(total=2 * args.rounds, desc="cost twin", unit="run") as progress:
        for _ in range(args.rounds):
            for system in results:
                results[system].append(measure(system, model, photo, args.images, args.concurrency))
                progress.update()

    medians = {s: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for s, runs in results.items()}  # fmt: skip
    print(f"\n{os.cpu_count()} CPUs; {args.rounds} rounds; {args.images} images at saturation "
          f"with {args.concurrency} clients; medians\n")  # fmt: skip
    print("| figure | baseline (2020 style) | service | service / baseline | goal |")
    print("|---|---|---|---|---|")
    for key in medians["baseline"]:
        base, ours = medians["baseline"][key], medians["service"][key]
        goal = GOALS.get(key)
        verdict = "" if goal is None else f"<= {goal}: {'met' if ours <= goal else 'missed'}"
        print(f"| {key} | {base:.4g} | {ours:.4g} | {ours / base:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
