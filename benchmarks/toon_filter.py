"""What the offline default costs per 512x512 face, against an earlier version, side by side.

    python -m benchmarks.toon_filter [--before WORKTREE] [--rounds 5] [--images 16] [--threads N]
                                     [--nodes]

Builds the toon-filter of this checkout (and, with --before, of another checkout of the project,
e.g. `git worktree add /tmp/toonify-before <commit>`), then times each on the same aligned real
face, alternating, with the service's two CPU backends: ONNX Runtime (what the service runs it
on, with ``--threads 1`` as its streams do) and OpenVINO f32. Medians of per-round milliseconds per
image, this checkout's over the other's, and how far apart their pictures are. ``--nodes``: then
ONNX Runtime's own profile of each graph on one thread, ms a face by operator type.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
from preprocess import align_face, create_detector  # noqa: E402
from preprocess.pipeline import crop_features  # noqa: E402
from tools.machine import describe_cpu  # noqa: E402
from toonify.generation.generator import OnnxGenerator  # noqa: E402
from toonify.generation.signature import GeneratorSignature  # noqa: E402


def build_in(checkout: Path, path: Path) -> None:
    """Save the toon-filter that ``checkout``'s own code builds (in a process of its own)."""
    code = "import sys, onnx; from model_store.toon_filter import build_toon_filter; "
    code += "onnx.save(build_toon_filter(), sys.argv[1])"
    subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=checkout,
        check=True,
        env={**os.environ, "PYTHONPATH": str(checkout)},
    )


def face_detector():
    """The service's default detector from the store (MediaPipe's, with a mesh), else MTCNN."""
    import bentoml

    from model_store import detector_spec
    from toonify.model_tags import stored_detector
    from toonify.settings import DEFAULT_DETECTOR_MODEL

    return create_detector(
        detector_spec(bentoml.models.get(stored_detector(DEFAULT_DETECTOR_MODEL)))
    )


def node_ms(path: Path, crop: np.ndarray, features: np.ndarray, runs: int) -> collections.Counter:
    """ms a face by operator type, from ONNX Runtime's profiler, one thread (the service's
    streams), with the service's input conversion."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    signature = GeneratorSignature()
    inputs = {"image": signature.to_model_input(crop), "features": features.astype(np.float32)}
    for _ in range(runs):
        session.run(None, inputs)
    spent: collections.Counter = collections.Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="another checkout of the project")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per run (the service runs ONNX Runtime streams of one); 0: every CPU",
    )
    parser.add_argument("--nodes", action="store_true", help="ms by operator type, each graph")
    args = parser.parse_args()

    checkouts = {"this checkout": ROOT}
    if args.before:
        checkouts = {"before": args.before.resolve(), **checkouts}
    photo = Image.fromarray(skimage.data.astronaut())
    face = face_detector().detect(photo)[0]
    aligned = align_face(photo, face.landmarks)
    # The face's own features where it has a mesh (a version without the input ignores them).
    crop, features = np.asarray(aligned.image)[None], crop_features(face, aligned)[None]
    folder = Path(tempfile.mkdtemp(prefix="toon-filter-bench-"))
    paths = {label: folder / f"{label.replace(' ', '_')}.onnx" for label in checkouts}
    generators = {}
    for label, checkout in checkouts.items():
        path = paths[label]
        build_in(checkout, path)
        for backend in ("openvino", "onnxruntime"):
            generator = OnnxGenerator(
                path, GeneratorSignature(), backend=backend, threads=args.threads or None
            )
            generator.warm_up()
            generators[(label, backend)] = generator
    results: dict[tuple[str, str], list[float]] = {key: [] for key in generators}
    for _ in range(args.rounds):
        for key, generator in generators.items():  # alternating, so drift hits all alike
            began = time.perf_counter()
            for _ in range(args.images):
                generator(crop, features)
            results[key].append((time.perf_counter() - began) * 1000 / args.images)
    print(
        f"\n{describe_cpu()}; {args.threads or 'every'} thread(s) a run; 512x512, one image "
        f"per call, {args.rounds} rounds of {args.images} images, median ms per image\n"
    )
    print("| backend | " + " | ".join(checkouts) + (" | ratio |" if args.before else " |"))
    print("|---|" + "---|" * len(checkouts) + ("---|" if args.before else ""))
    for backend in ("openvino", "onnxruntime"):
        cells = [statistics.median(results[(label, backend)]) for label in checkouts]
        ratio = f" {cells[-1] / cells[0]:.2f} |" if args.before else ""
        print(f"| {backend} f32 | " + " | ".join(f"{c:.1f}" for c in cells) + " |" + ratio)
    if args.before:
        before, now = (generators[(label, "onnxruntime")](crop, features) for label in checkouts)
        difference = np.abs(now.astype(np.int16) - before)
        print(
            f"\nthe picture against before (ONNX Runtime, the same face, 8-bit): mean difference "
            f"{difference.mean():.3f} grey levels, {np.mean(difference == 0):.1%} of values "
            f"unchanged, 99th percentile {np.percentile(difference, 99):.0f}, "
            f"largest {difference.max()}"
        )
    if args.nodes:
        spent = {label: node_ms(paths[label], crop, features, 20) for label in checkouts}
        print("\nONNX Runtime's profile, one thread, ms a face by operator type (over 0.2 ms)\n")
        print("| operator | " + " | ".join(checkouts) + " |")
        print("|---|" + "---|" * len(checkouts))
        totals = collections.Counter()
        for counter in spent.values():
            totals.update(counter)
        for op, _ in totals.most_common():
            cells = [spent[label][op] for label in checkouts]
            if max(cells) >= 0.2:
                print(f"| {op} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
        print("| all | " + " | ".join(f"{sum(spent[k].values()):.2f}" for k in checkouts) + " |")


if __name__ == "__main__":
    main()
