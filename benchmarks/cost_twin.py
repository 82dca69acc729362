"""The seed's model (the cost twin) served the 2020 way and our way, side by side.

    python -m benchmarks.cost_twin [--rounds 2] [--images 8] [--concurrency 4]
                                   [--precision int8 bf16 ...]

Registers cost-twin (pix2pixHD, 182,443,267 parameters, seeded random weights: its output is
noise) in a temporary model store, then alternates, round after round, the baseline
(benchmarks/baseline_server.py: one Flask process, one image at a time, default ONNX Runtime
session) and `bentoml serve service:Toonify` on the same model and machine. Per system:
seconds per image (one request alone), CPU seconds per image (all its processes), images/s at
saturation (--concurrency clients), peak RSS of the process running the generator and of
the whole server (idle once ready, and at saturation), cold start
(process start to /readyz 200) and cost per 1000 images at the cloudrun-2020 profile (2 vCPU,
4 GiB) from the union of the clients' request intervals. Medians over rounds, with ratios.

The twin's random weights make its quality figures meaningless (its output is noise, and noise
amplifies rounding), so the service's quality gate cannot judge it: the service runs it at each
``--precision`` forced, the precision a real model that passed its gate would get. What the twin
measures is speed and memory at each precision.
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
from tools.machine import describe_cpu  # noqa: E402
from tools.served import free_port, wait_for_200  # noqa: E402
from toonify.cost import BillingMeter, load_profiles  # noqa: E402

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


def start(system: str, model, precision: str) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    if system == "baseline":
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "baseline_server.py"),
            model.path_of(MODEL_FILE),
            "--port",
            str(port),
        ]
        env = os.environ
    else:
        command = [sys.executable, "-m", "bentoml", "serve", "service:Toonify", "--port", str(port)]
        # The twin's output is noise, so the quality gate cannot judge it (see the docstring).
        env = {
            **os.environ,
            "TOONIFY_GENERATOR_MODEL": str(model.tag),
            "TOONIFY_PRECISION": precision,
        }
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_200(f"{url}/readyz", timeout=600, alive=lambda: process.poll() is None)
    except ChildProcessError:
        raise SystemExit(f"{system} exited ({process.returncode}) before it was ready") from None
    return process, url, time.perf_counter() - started


def generator_processes(system: str, pid: int) -> list[psutil.Process]:
    if system == "baseline":
        return [psutil.Process(pid)]
    return [p for p in tree(pid) if "toonify-generator" in " ".join(p.cmdline())]


def measure(
    system: str, model, photo: bytes, images: int, concurrency: int, precision: str = "f32"
) -> dict[str, float]:
    process, url, cold_start = start(system, model, precision)
    idle_mb = sum(p.memory_info().rss for p in tree(process.pid)) / 2**20
    memory = PeakMemory(lambda: generator_processes(system, process.pid))
    instance = PeakMemory(lambda: tree(process.pid))
    memory.start()
    instance.start()
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
        instance.done.set()
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
        "instance_rss_idle_mb": idle_mb,  # every process of the server, once ready
        "instance_peak_rss_mb": instance.peak_mb,
        "cold_start_s": cold_start,
        "usd_per_1000": 1000 * usd / images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--precision", nargs="+", default=["int8", "bf16"], choices=["int8", "bf16", "f32"]
    )
    args = parser.parse_args()

    build_defaults()
    model = build_twin()
    meta = model.info.metadata
    print(describe_cpu())
    print(
        f"cost-twin: COST TWIN, {meta['parameters']:,} parameters (output is noise, so its "
        f"PSNR figures (bf16 {meta['bf16_psnr_db']} dB, int8 {meta.get('int8_psnr_db')} dB) "
        "say nothing about a real model)"
    )
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()

    systems = ["baseline", *(f"service {p}" for p in args.precision)]
    results: dict[str, list[dict]] = {system: [] for system in systems}
    with tqdm(total=len(systems) * args.rounds, desc="cost twin", unit="run") as progress:
        for _ in range(args.rounds):
            for system in systems:  # alternating, so drift in the machine hits all alike
                kind, _, precision = system.partition(" ")
                runs = results[system]
                runs.append(measure(kind, model, photo, args.images, args.concurrency, precision))
                progress.update()

    medians = {
        s: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for s, runs in results.items()
    }
    print(
        f"\n{describe_cpu()}; {args.rounds} rounds; {args.images} images at saturation with "
        f"{args.concurrency} clients; medians\n"
    )
    services = systems[1:]
    print("| figure | baseline (2020 style) | " + " | ".join(services) + " | goal |")
    print("|---|---|" + "---|" * len(services) + "---|")
    for key in medians["baseline"]:
        base = medians["baseline"][key]
        cells = []
        for system in services:
            ours = medians[system][key]
            cells.append(f"{ours:.4g} ({ours / base:.2f}x)")
        goal = GOALS.get(key)
        verdicts = (
            ""
            if goal is None
            else f"<= {goal}: "
            + ", ".join(
                f"{s.split()[1]} {'met' if medians[s][key] <= goal else 'missed'}" for s in services
            )
        )
        print(f"| {key} | {base:.4g} | " + " | ".join(cells) + f" | {verdicts} |")
    speed = {s: medians[s]["images_per_s"] / medians["baseline"]["images_per_s"] for s in services}
    amx = "amx_int8" in describe_cpu()
    need = 6.0 if amx else 3.0
    print(
        f"\nimages/s vs baseline (goal >= {need}x on {'AMX' if amx else 'a CPU without AMX'}): "
        + ", ".join(
            f"{s.split()[1]} {r:.2f}x {'met' if r >= need else 'missed'}" for s, r in speed.items()
        )
    )


if __name__ == "__main__":
    main()
