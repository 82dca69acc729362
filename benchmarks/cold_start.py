"""Where the seconds of a cold start go: process start to /readyz 200, per process.

    python -m benchmarks.cold_start [--rounds 5] [--twin] [--floor]

Starts `bentoml serve service:Toonify` from nothing (a scratch model store holding the offline
default, or with --twin the cost twin too) and polls /readyz every 20 ms. For every process of
the server it records when it started (after the command), when its service said it was
initialised, and the CPU seconds it had used by the time the server was ready; then, in plain
interpreters, what one worker pays to import the service module and what each service's
__init__ costs (model load, warm-up). Medians over rounds. ``--floor`` alternates each start with
one of three empty services chained as ours (benchmarks/empty_services.py): BentoML's own start-up
on this machine, the floor under any design with three services.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-cold-")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import httpx  # noqa: E402
import psutil  # noqa: E402

from model_store.build import build_defaults, build_twin  # noqa: E402
from tools.machine import describe_cpu  # noqa: E402
from tools.served import free_port  # noqa: E402
from toonify.model_tags import stored_detector  # noqa: E402
from toonify.settings import SETTINGS  # noqa: E402

INITIALISED = re.compile(r"\[(?:entry_service|service):([\w-]+):\d+\] Service [\w-]+ initialized")


def process_name(process: psutil.Process, root: int) -> str:
    if process.pid == root:
        return "bentoml serve (main)"
    command = " ".join(process.cmdline())
    found = re.search(r"--service-name[ =](\S+)", command)
    return found.group(1) if found else "other: " + command[-50:]


def one_start(env: dict[str, str], target: str = "service:Toonify") -> dict[str, float]:
    port = free_port()
    began = time.time()
    server = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    initialised: dict[str, float] = {}

    def read_log() -> None:
        for line in server.stdout:
            if found := INITIALISED.search(line):
                initialised[found.group(1)] = time.time() - began

    threading.Thread(target=read_log, daemon=True).start()
    seen: dict[int, psutil.Process] = {}
    while True:
        try:
            for process in [psutil.Process(server.pid), *psutil.Process(server.pid).children(True)]:
                seen.setdefault(process.pid, process)
        except psutil.Error:
            pass
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited before it was ready")
        time.sleep(0.02)
    figures = {"ready_s": time.time() - began}
    # Process start times relative to the main process (psutil's clock is coarse against ours).
    origin = seen[server.pid].create_time()
    for process in seen.values():
        try:
            name = process_name(process, server.pid)
            if process.pid != server.pid:
                figures[f"{name}: started_s (after main)"] = process.create_time() - origin
            figures[f"{name}: cpu_s"] = sum(process.cpu_times()[:2])
            figures[f"{name}: rss_mb"] = process.memory_info().rss / 2**20
        except psutil.Error:
            continue
    for name, when in initialised.items():
        figures[f"{name}: initialised_s"] = when
    for process in reversed(list(seen.values())):
        try:
            process.kill()
        except psutil.Error:
            pass
    server.wait()
    return figures


def in_one_interpreter(code: str, env: dict[str, str]) -> float:
    """Seconds a fresh interpreter takes to run ``code`` (minus a bare interpreter's start)."""

    def run(body: str) -> float:
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", body], cwd=ROOT, env=env, check=True, capture_output=True
        )
        return time.perf_counter() - began

    return run(code) - run("pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--twin", action="store_true", help="serve the cost twin (int8)")
    parser.add_argument(
        "--floor", action="store_true", help="alternate with three empty services chained"
    )
    args = parser.parse_args()
    build_defaults()
    # As `make serve` leaves it (make bytecode): compiled once, not by every process each start.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "service.py",
            "toonify",
            "preprocess",
            "model_store",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    env = dict(os.environ)
    detector = stored_detector(SETTINGS.detector_model).split(":")[0]
    label = f"offline default (toon-filter, {detector})"
    if args.twin:
        twin = build_twin()
        env |= {"TOONIFY_GENERATOR_MODEL": str(twin.tag), "TOONIFY_PRECISION": "int8"}
        label = f"cost twin (int8), {detector}"
    runs, floor = [], []
    for _ in range(args.rounds):
        runs.append(one_start(env))
        if args.floor:
            floor.append(one_start(env, "benchmarks.empty_services:EmptyEntry"))
    keys = sorted({key for run in runs for key in run}, key=lambda k: (k != "ready_s", k))
    medians = {k: statistics.median(r[k] for r in runs if k in r) for k in keys}
    imports = {
        "import the service module (every process pays it)": "import service",
        "import bentoml alone": "import bentoml",
        # As the services do it: the compiled models from the cache the served starts filled.
        "Generator.__init__: load + warm-up": (
            "import bentoml, service; from model_store.load import load_configured_generator; "
            "from toonify.settings import SETTINGS as S; "
            "g = load_configured_generator(bentoml.models.get(S.generator_model), S, "
            "service.CACHE_DIR); g.warm_up((S.crop_size, S.degraded_size))"
        ),
        "Preprocess.__init__: the detector's sessions": (
            "import bentoml, service; from model_store import detector_spec; "
            "from toonify.model_tags import stored_detector; "
            "from preprocess import DetectorSettings, create_detector; "
            "from toonify.settings import SETTINGS as S; "
            "create_detector(detector_spec(bentoml.models.get(stored_detector("
            "S.detector_model))), DetectorSettings(cache_dir=service.CACHE_DIR))"
        ),
    }
    singles = {name: in_one_interpreter(code, env) for name, code in imports.items()}
    print(f"\n{describe_cpu()}; {label}; {args.rounds} cold starts, medians\n")
    print("| figure | seconds or MB |\n|---|---|")
    for key, value in medians.items():
        print(f"| {key} | {value:.2f} |")
    if floor:
        # Where the difference goes: each empty process's CPU against ours above.
        ends = ("cpu_s", "ready_s", "(after main)")
        keys = sorted({k for run in floor for k in run if k.endswith(ends)})
        empty = {k: statistics.median(r[k] for r in floor if k in r) for k in keys}
        for key, value in empty.items():
            print(f"| three empty services, the same BentoML (--floor): {key} | {value:.2f} |")
        print(f"| this service over the floor | +{medians['ready_s'] - empty['ready_s']:.2f} |")
    print("\n| one interpreter, alone (minus a bare interpreter's start) | seconds |\n|---|---|")
    base = singles["import the service module (every process pays it)"]
    loads = 0.0
    for name, seconds in singles.items():
        extra = ""
        if not name.startswith("import"):  # a service's load, after the module's import
            loads += seconds - base
            extra = f" ({seconds - base:.2f} after the import)"
        print(f"| {name} | {seconds:.2f}{extra} |")
    # The workers start together and keep every CPU busy until ready (the CPU seconds above):
    # the models' loads add about their CPU time shared over the CPUs, whatever else is cut.
    cpus = len(os.sched_getaffinity(0))
    print(f"| both loads after the import, shared over {cpus} CPUs | {loads / cpus:.2f} |")


if __name__ == "__main__":
    main()
