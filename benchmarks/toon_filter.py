"""What the offline default costs per 512x512 face, against an earlier version, side by side.

    python -m benchmarks.toon_filter [--before WORKTREE] [--rounds 5] [--images 16] [--threads N]

Builds the toon-filter of this checkout (and, with --before, of another checkout of the project,
e.g. `git worktree add /tmp/toonify-before <commit>`), then times each on the same aligned real
face, alternating, with the service's two CPU backends: ONNX Runtime (what the service runs it
on, with ``--threads 1`` as its streams do) and OpenVINO f32. Medians of per-round milliseconds per
image, and this checkout's over the other's.
"""

from __future__ import annotations

import argparse
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
    generators = {}
    for label, checkout in checkouts.items():
        path = folder / f"{label.replace(' ', '_')}.onnx"
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


if __name__ == "__main__":
    main()
