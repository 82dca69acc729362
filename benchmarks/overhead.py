"""What serving costs beyond the work: CPU per image served, against the same pipeline in one
process, side by side in one run.

    python -m benchmarks.overhead [--model toon-filter:latest --model animeganv3:latest]
                                  [--seconds 40] [--clients 6] [--profile docs/images] [--floor]

For each model: the instance (``bentoml serve``, its three services) at saturation with
``--clients`` callers posting the same photos one after another (few enough that every request is
served at the full level: no refusals, no reduced level), and CPU seconds summed over every
process of the instance from /proc, the callers excluded; then the same photos through the same
stages in this process (the stored detector and generator with the service's settings: backend,
precision, streams; ``PhotoWork.prepare``, the generator, ``PhotoWork.finish``), one after
another. Both are CPU per image answered; the ratio is the serving's overhead.

``--profile DIR``: while the load goes on, py-spy samples every process of the instance twice
(after the CPU was measured, so the sampler costs nothing there): once to a flame graph,
DIR/overhead-MODEL.svg, once as collapsed stacks, which are summed into CPU ms per image by
process and by stage (the stage of a sample is the innermost frame a rule of ``STAGES`` knows).

``--floor``: then three bare BentoML services chained as ours (benchmarks/bare_chain.py) under
the same callers, carrying the same bytes and doing nothing else, then with 8 px crops, then
carrying next to nothing: the serving's floor on BentoML's three services, and the parts of it
the crops and the photos cost.

The photos: a JPEG selfie (the astronaut), a 12 MP phone JPEG stored turned (EXIF 6), and
insightface's six-face group photo (its largest face), the with-face uploads of the load test.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from loadtest.photos import build_pool
from tools.machine import describe_cpu
from tools.served import Served
from toonify.levels import Level
from toonify.schema import Toons

PHOTOS = ("astronaut.jpg", "phone-12mp-orientation6.jpg", "t1.jpg")

# (stage, pattern on a frame "function (file:line)"), innermost first wins; checked in order.
STAGES = (
    ("decode", r"preprocess/decode\.py"),
    ("detect", r"preprocess/detect(ors/\w+)?\.py"),
    ("align", r"preprocess/(align|features|orient)\.py"),
    ("generate", r"toonify/generation/generator\.py"),
    ("batching", r"toonify/generation/batching\.py"),
    ("paste back and encode", r"toonify/photos/answer_image\.py|preprocess/paste\.py"),
    ("serialisation (pickle, pydantic, JSON)", r"_bentoml_impl/serde\.py|pydantic|pickle|json/"),
    (
        "HTTP parsing and writing",
        r"h11|httptools|uvicorn/protocols|starlette/formparsers|multipart",
    ),
    ("internal HTTP client", r"httpx|httpcore|_bentoml_impl/client"),
    ("logging", r"logging/__init__\.py|bentoml/_internal/log|access"),
    ("metrics", r"prometheus_client|toonify/metrics\.py"),
    ("thread hops", r"anyio/_backends|anyio/to_thread|concurrent/futures|threading\.py"),
    ("tracing", r"opentelemetry"),
    ("entry (uploads, admission, billing)", r"toonify/(edge|cost|levels)"),
    ("ASGI and routing", r"starlette|bentoml/_internal/server|_bentoml_impl/server"),
    ("event loop", r"asyncio|uvloop"),
)


def instance_cpu_s(root: psutil.Process) -> collections.Counter:
    """User + system CPU seconds of ``root`` and every process under it, by the service each
    runs (BentoML's workers name it on their command line); of each worker's, its kernel time
    and its main thread's, the event loop that serves its HTTP (the work runs in other threads)."""
    total: collections.Counter = collections.Counter()
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            name = service_of(" ".join(process.cmdline()))
            threads = process.threads()
        except psutil.NoSuchProcess:
            continue
        total[name] += times.user + times.system + times.children_user + times.children_system
        total[f"{name}, of it in the kernel"] += times.system + times.children_system
        if process is not root:
            main = [t for t in threads if t.id == process.pid]
            total[f"{name}, of it in its event loop"] += sum(
                t.user_time + t.system_time for t in main
            )
    return total


def service_of(command_line: str) -> str:
    match = re.search(r"--service-name[ =](\S+)", command_line)
    return match.group(1) if match else "bentoml serve (supervisor)"


def raw_body(photo: bytes) -> dict:
    return {"content": photo}


def multipart(photo: bytes) -> dict:
    return {"files": {"photo": ("photo.jpg", photo, "image/jpeg")}}


def load(
    url: str, photos: list[bytes], clients: int, seconds: float, upload=raw_body
) -> tuple[int, dict]:
    """``clients`` callers posting the photos in turn for ``seconds`` (as ``upload`` makes the
    request of a photo): images answered 200, and a count of every status."""
    statuses: collections.Counter = collections.Counter()
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def caller(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            for data in itertools.islice(itertools.cycle(photos), offset, None):
                if time.monotonic() >= stop:
                    return
                status = client.post("/toonify", **upload(data)).status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses[200], dict(statuses)


def served_cpu_ms(
    served: Served, photos: list[bytes], clients: int, seconds: float, upload=raw_body
) -> dict:
    """CPU ms per image answered, by process of the instance, under ``clients`` callers."""
    root = psutil.Process(served.process.pid)
    started_cpu = instance_cpu_s(root)
    images, statuses = load(served.url, photos, clients, seconds, upload)
    by_process = instance_cpu_s(root)
    by_process.subtract(started_cpu)
    if set(statuses) != {200}:
        raise RuntimeError(f"not every request was answered 200: {statuses}")
    per_image = {name: cpu / images * 1000 for name, cpu in by_process.items() if cpu >= 0.0005}
    rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    return per_image | {"instance RSS after the round, MB": rss / 2**20}


def py_spy(root: psutil.Process, seconds: float, fmt: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(root.pid),
            "--subprocesses",
            "--rate",
            "200",
        ]
        + ["--duration", str(int(seconds)), "--format", fmt, "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def profiled(served: Served, photos, args, model: str, cpu_ms_per_image: float) -> dict:
    """The flame graph, then the collapsed stacks, each under the same load."""
    root, folder = psutil.Process(served.process.pid), args.profile
    folder.mkdir(parents=True, exist_ok=True)
    stem = model.split(":")[0]
    svg = folder / f"overhead-{stem}.svg"
    raw = Path(tempfile.mkdtemp()) / "stacks.txt"
    seconds = min(args.seconds, 20)
    for fmt, out in (("flamegraph", svg), ("raw", raw)):
        sampler = py_spy(root, seconds, fmt, out)
        load(served.url, photos, args.clients, seconds + 2)
        sampler.wait(timeout=120)
    return stage_table(raw.read_text(), cpu_ms_per_image)


def stage_table(stacks: str, cpu_ms_per_image: float) -> dict:
    """CPU ms per image by (process, stage): each sample's share of every sample, times the CPU
    per image measured without the sampler."""
    counts: collections.Counter = collections.Counter()
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        process = service_of([f for f in frames if f.startswith("process ")][-1])
        stage = next(
            (
                name
                for frame in reversed(frames)
                for name, pattern in STAGES
                if re.search(pattern, frame)
            ),
            "other Python",
        )
        counts[(process, stage)] += int(count)
    total = sum(counts.values()) or 1
    return {key: value / total * cpu_ms_per_image for key, value in counts.most_common()}


class InProcess:
    """The instance's stages in this process, with the service's settings for ``model``."""

    def __init__(self, model: str) -> None:
        import bentoml

        from model_store import detector_spec
        from model_store.load import load_configured_generator
        from preprocess import DetectorSettings, create_detector
        from toonify.model_tags import stored_detector
        from toonify.photos.worker import PhotoWork
        from toonify.schema import ToonifyOptions
        from toonify.settings import Settings

        settings = Settings(generator_model=model)
        cache = settings.cache_dir or Path(tempfile.gettempdir()) / "toonify-cache"
        detector = create_detector(
            detector_spec(bentoml.models.get(stored_detector(settings.detector_model))),
            DetectorSettings(
                detect_size=settings.detect_size,
                min_face_size=settings.min_face_size,
                cache_dir=cache,
            ),
        )
        self.generator = load_configured_generator(bentoml.models.get(model), settings, cache)
        self.generator.warm_up((settings.crop_size,))
        self.work, self.options = PhotoWork(detector, settings), ToonifyOptions()

    def once(self, data: bytes, spent: collections.Counter) -> None:
        def timed(stage: str, call, *args):
            began = cpu_seconds()
            result = call(*args)
            spent[stage] += cpu_seconds() - began
            return result

        job = timed(
            "prepare (decode, detect, align)", self.work.prepare, data, self.options, Level.full
        )
        pixels = timed("generate", self.generator, job.crops, job.features)
        toons = Toons(
            pixels=pixels, queued_s=0, generate_s=0, batch_size=1, generated_size=pixels.shape[1]
        )
        timed("finish (encode)", self.work.finish, job, toons, self.options)

    def cpu_ms(self, photos: list[bytes], seconds: float, threads: int) -> dict:
        """CPU ms per image by stage, ``threads`` callers at once. With several, the stages
        overlap: the process's CPU is shared among them in proportion to their own times."""
        spent: collections.Counter = collections.Counter()
        stop, done = time.monotonic() + seconds, []

        def caller(offset: int) -> None:
            for data in itertools.islice(itertools.cycle(photos), offset, None):
                if time.monotonic() >= stop:
                    return
                self.once(data, spent)
                done.append(1)

        began = cpu_seconds()
        callers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
        scale = (cpu_seconds() - began) / sum(spent.values())
        return {stage: cpu * scale / len(done) * 1000 for stage, cpu in spent.items()}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def served_total(by_process: dict) -> float:
    return sum(
        ms
        for name, ms in by_process.items()
        if name.startswith(("toonify", "bentoml", "bare")) and ", of it " not in name
    )


def median_of(rounds: list[dict]) -> dict:
    return {key: statistics.median(r.get(key, 0.0) for r in rounds) for key in rounds[0]}


def measure(model: str, photos: list[bytes], args) -> tuple[dict, dict]:
    """Rows of figures for one model, medians of the rounds; the profile's stage table."""
    servers = {}
    logs = Path(tempfile.mkdtemp(prefix="toonify-overhead-"))
    env = {"TOONIFY_GENERATOR_MODEL": model}
    try:
        servers["now"] = Served(env, logs / "now.log")
        if args.before:
            servers["before"] = Served(env, logs / "before.log", cwd=args.before.resolve())
        for served in servers.values():
            load(served.url, photos, args.clients, 5)  # warm: every shape once, pools filled
        pipeline = InProcess(model)
        pipeline.once(photos[0], collections.Counter())
        served_rounds: dict[str, list] = {label: [] for label in servers}
        pipeline_rounds: dict[int, list] = {1: [], args.streams: []}
        for _ in range(args.rounds):  # alternating, so the machine's drift hits all alike
            for label, served in servers.items():
                served_rounds[label].append(
                    served_cpu_ms(served, photos, args.clients, args.seconds)
                )
            for threads in pipeline_rounds:
                pipeline_rounds[threads].append(pipeline.cpu_ms(photos, args.seconds, threads))
        stages = {}
        if args.profile is not None:
            now = median_of(served_rounds["now"])
            stages = profiled(servers["now"], photos, args, model, served_total(now))
    finally:
        for served in servers.values():
            served.stop()
    rows: dict[str, float] = {}
    ratios = {}
    for label, rounds in served_rounds.items():
        totals = [served_total(r) for r in rounds]
        rows[f"served_cpu_ms_per_image ({label})" if args.before else "served_cpu_ms_per_image"] = (
            statistics.median(totals)
        )
        ratios[label] = totals
    many = [sum(r.values()) for r in pipeline_rounds[args.streams]]
    one = [sum(r.values()) for r in pipeline_rounds[1]]
    rows["pipeline_cpu_ms_per_image"] = statistics.median(many)
    for label, totals in ratios.items():
        suffix = f" ({label})" if args.before else ""
        rows[f"served_over_pipeline{suffix}"] = statistics.median(
            t / m for t, m in zip(totals, many, strict=True)
        )
    rows["pipeline, one caller"] = statistics.median(one)
    rows["served_over_pipeline, one caller"] = statistics.median(
        t / m for t, m in zip(ratios["now"], one, strict=True)
    )
    for name, ms in sorted(median_of(served_rounds["now"]).items()):
        rows[f"served (now): {name}"] = ms
    if "before" in served_rounds:
        for name, ms in sorted(median_of(served_rounds["before"]).items()):
            rows[f"served (before): {name}"] = ms
    for name, ms in median_of(pipeline_rounds[args.streams]).items():
        rows[f"pipeline: {name}"] = ms
    return rows, stages


# (label, the bare chain's environment, the photos as sent): the same bytes as ours carry; the
# same photos with 8 px crops (what the crops cost: what shared memory could save); next to
# nothing, which leaves what a request costs whatever it carries.
FLOOR_ROW = "three bare BentoML services, {}"
FLOOR_LOADS = (
    ("the same bytes", {}, lambda photos: photos),
    ("the same photos, 8 px crops", {"BARE_CHAIN_CROP_SIDE": "8"}, lambda photos: photos),
    ("2 KB photos, 8 px crops", {"BARE_CHAIN_CROP_SIDE": "8"}, lambda p: [x[:2048] for x in p]),
)


def floor_rows(photos: list[bytes], args) -> dict[str, float]:
    """CPU ms per image of three bare BentoML services chained as ours
    (benchmarks/bare_chain.py), under the same callers: the serving no design that passes these
    bytes between BentoML's three services goes below on this machine."""
    rows: dict[str, float] = {}
    logs = Path(tempfile.mkdtemp(prefix="toonify-floor-"))
    command = [sys.executable, "-m", "bentoml", "serve", "benchmarks.bare_chain:BareEntry"]
    for label, env, sent in FLOOR_LOADS:
        sent_photos = sent(photos)
        served = Served(env, logs / f"{len(rows)}.log", command=command)
        try:
            load(served.url, sent_photos, args.clients, 5, multipart)
            rounds = [
                served_cpu_ms(served, sent_photos, args.clients, args.seconds, multipart)
                for _ in range(args.rounds)
            ]
        finally:
            served.stop()
        rows[FLOOR_ROW.format(label)] = statistics.median(map(served_total, rounds))
        if not env:
            by_process = sorted(median_of(rounds).items())
            rows |= {name: ms for name, ms in by_process if name.startswith("bare")}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", help="generator tag (repeatable)")
    parser.add_argument("--seconds", type=float, default=20, help="each phase of a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument(
        "--streams",
        type=int,
        default=2,
        help="callers of the in-process pipeline at once: the generator's streams, as served",
    )
    parser.add_argument("--before", type=Path, help="another checkout, served side by side")
    parser.add_argument("--profile", type=Path, help="write flame graphs and stage tables here")
    parser.add_argument(
        "--floor", action="store_true", help="and three bare BentoML services carrying the bytes"
    )
    args = parser.parse_args()
    models = args.model or ["toon-filter:latest"]
    pool = {upload.name: upload.data for upload in build_pool()}
    photos = [pool[name] for name in PHOTOS]
    table: dict[str, dict[str, float]] = collections.defaultdict(dict)
    stage_tables = {}
    for model in models:
        rows, stage_tables[model] = measure(model, photos, args)
        for name, value in rows.items():
            table[name][model] = value
    floor = floor_rows(photos, args) if args.floor else {}
    for model in models:
        pipeline = table["pipeline_cpu_ms_per_image"][model]
        served = "served_cpu_ms_per_image" + (" (now)" if args.before else "")
        serving = table[served][model] - pipeline
        table["serving: served minus pipeline"][model] = serving
        table["serving the goal of 1.2 allows"][model] = 0.2 * pipeline
        if floor:
            floor_ms = floor[FLOOR_ROW.format(FLOOR_LOADS[0][0])]
            table["serving beyond the bare services' (--floor)"][model] = serving - floor_ms
    print(
        f"\n{describe_cpu()}; {args.clients} callers served, the pipeline with {args.streams} "
        f"callers (and one); {args.rounds} rounds of {args.seconds:.0f} s, medians\n"
    )
    print("| figure | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for name, values in table.items():
        cells = (f"{values[m]:.2f}" if m in values else "" for m in models)
        print(f"| {name} | " + " | ".join(cells) + " |")
    if floor:
        print("\nThe floor: three bare BentoML services chained (benchmarks/bare_chain.py)\n")
        print("| figure | CPU ms an image |")
        print("|---|---|")
        for name, ms in floor.items():
            print(f"| {name} | {ms:.2f} |")
    for model, stages in stage_tables.items():
        if not stages:
            continue
        print(f"\n{model}: CPU ms per image by process and stage (py-spy samples)\n")
        print("| process | stage | CPU ms per image |")
        print("|---|---|---|")
        for (process, stage), ms in stages.items():
            if ms >= 0.5:
                print(f"| {process} | {stage} | {ms:.1f} |")


if __name__ == "__main__":
    main()
