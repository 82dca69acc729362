"""Images per second of a stored generator with one crop at a time against several at once.

    python -m benchmarks.generator_streams [--model animeganv3:latest] [--seconds 8] [--rounds 2]

For the model at the precision the service would choose here, each configuration runs as the
generator service runs it (``load_generator``, as many callers as streams each sending one crop
at a time as photos arrive under load, and the serving workers' malloc settings): the layout
before streams (OpenVINO, one stream on every thread) beside the current defaults
(``pick_backend``, ``default_streams``) and the other combinations of backend and streams.
Configurations alternate within each round; medians over rounds. Also the lone crop's latency
(the generator at low load).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import bentoml
import numpy as np

from model_store import choose_precision, load_generator
from tools.machine import describe_cpu
from toonify.generation.generator import default_threads

SERVED_MMAP_THRESHOLD = str(16 << 20)  # what service.py sets for every worker


def saturate(generator, callers: int, size: int, seconds: float) -> tuple[float, float]:
    """(images/s, CPU seconds per image) with ``callers`` threads each running one crop at a
    time for ``seconds``."""
    crop = np.full((1, size, size, 3), 128, dtype=np.uint8)
    done = [0] * callers
    stop = time.perf_counter() + seconds

    def call(index: int) -> None:
        while time.perf_counter() < stop:
            generator(crop)
            done[index] += 1

    cpu, began = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    return sum(done) / wall, cpu / sum(done)


def lone_latency(generator, crop: np.ndarray, runs: int = 9) -> float:
    """Median seconds for one ``crop`` alone (after one run that is not counted)."""
    generator(crop)
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        generator(crop)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != SERVED_MMAP_THRESHOLD:
        # glibc reads it at start: run again as the generator's worker runs (service.py)
        env = os.environ | {"MALLOC_MMAP_THRESHOLD_": SERVED_MMAP_THRESHOLD}
        os.execve(sys.executable, [sys.executable, "-m", __spec__.name, *sys.argv[1:]], env)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="animeganv3:latest")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="as TOONIFY_PRECISION")
    args = parser.parse_args()
    model = bentoml.models.get(args.model)
    precision = choose_precision(args.precision, model.info.metadata, 35.0)
    threads = default_threads()
    configurations = {
        f"before: openvino, 1 stream x {threads} threads": ("openvino", 1),
        "now: the defaults (backend and streams auto)": ("auto", 0),
    }
    if precision == "f32":
        configurations[f"onnxruntime, 1 stream x {threads} threads"] = ("onnxruntime", 1)
    configurations["openvino, 2 streams"] = ("openvino", 2)
    generators = {
        name: load_generator(
            model,
            threads=threads,
            backend=backend,
            streams=count,
            precision=args.precision,
        )
        for name, (backend, count) in configurations.items()
    }
    size = model.info.metadata.get("size", 512)
    for generator in generators.values():
        generator.warm_up()
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in generators}
    for _ in range(args.rounds):
        for name, generator in generators.items():
            rate, cpu = saturate(generator, generator.streams, size, args.seconds)
            lone = lone_latency(generator, np.full((1, size, size, 3), 128, dtype=np.uint8))
            figures[name].append((rate, cpu, lone))
    print(f"\n{describe_cpu()}; {model.tag} at {precision}, {size} px crops; {args.rounds} rounds")
    print(
        "\n| configuration | backend | images/s at saturation | CPU-ms per image "
        "| lone crop ms | ratio |\n|---|---|---|---|---|---|"
    )
    base = statistics.median(f[0] for f in figures[next(iter(figures))])
    for name, rows in figures.items():
        rate = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows) * 1000
        lone = statistics.median(r[2] for r in rows) * 1000
        backend = generators[name].providers[0]
        print(f"| {name} | {backend} | {rate:.2f} | {cpu:.0f} | {lone:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
