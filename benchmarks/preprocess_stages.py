"""Median milliseconds per preprocessing stage for a 12 MP phone photo, per detector, on one core.

    python -m benchmarks.preprocess_stages [--runs 15] [--assets ../shared/models]

The photo is a 4032x3024 JPEG stored sideways with EXIF Orientation 6, as phones write them,
made from ../shared/models/faces/pexels_two_women_on_phones.jpg (or, without it, from the
astronaut in scikit-image). Detectors other than the offline default need ../shared/models.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, before numpy/scipy start pools

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from preprocess import (
    DecodeSettings,
    Orientation,
    align_face,
    create_detector,
    decode_image,
    to_rgb,
)
from preprocess.detect import DetectorSettings
from tools.machine import describe_cpu

GOAL_MS = 60.0
ASSETS = Path(
    os.environ.get("TOONIFY_TEST_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "models")
)


def phone_jpeg(assets: Path) -> bytes:
    source = assets / "faces" / "pexels_two_women_on_phones.jpg"
    if source.is_file():
        photo = Image.open(source).convert("RGB")
        width = photo.height * 4 // 3  # crop to 4:3 around the large face, then 12 MP
        photo = photo.crop((photo.width - width, 0, photo.width, photo.height))
    else:
        import numpy as np
        import skimage.data

        photo = Image.fromarray(np.asarray(skimage.data.astronaut()))
    display = photo.resize((4032, 3024), Image.Resampling.LANCZOS)
    stored = display.transpose(Image.Transpose.ROTATE_90)  # Orientation 6 stores it turned left
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def stored_mtcnn() -> str:
    """The offline default as the model store keeps it (PRelu rewritten), in a scratch store."""
    os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-bench-")
    from model_store import detector_spec
    from model_store.build import import_detector
    from preprocess.detectors.mtcnn import LICENCE, packaged_weights_dir

    return detector_spec(import_detector(packaged_weights_dir(), "mtcnn", "mtcnn", LICENCE))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, (time.perf_counter() - start) * 1000


def measure(
    spec: str, data: bytes, runs: int, decode: DecodeSettings, detect_size: int
) -> dict[str, float]:
    detector = create_detector(spec, DetectorSettings(threads=1, detect_size=detect_size))
    stages: dict[str, list[float]] = {"decode": [], "orient": [], "detect": [], "align": []}
    for _ in range(runs + 1):  # the first run warms caches and is dropped
        # The stages as preprocess.pipeline runs them: the stored pixels are never turned
        # upright; the detector turns its small copy, alignment samples through the orientation.
        image, decode_ms = timed(decode_image, data, decode)
        (orientation, stored), orient_ms = timed(lambda im: (Orientation.of(im), to_rgb(im)), image)
        faces, detect_ms = timed(detector.detect, stored, orientation)
        if not faces:
            raise SystemExit(f"{spec}: no face found in the benchmark photo")
        _, align_ms = timed(align_face, stored, faces[0].landmarks, orientation=orientation)
        for name, value in zip(stages, (decode_ms, orient_ms, detect_ms, align_ms), strict=True):
            stages[name].append(value)
    return {name: statistics.median(values[1:]) for name, values in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--draft-long-side",
        type=int,
        default=DecodeSettings.draft_long_side,
        help="decode JPEGs at reduced scale while the long side stays >= this",
    )
    parser.add_argument("--detect-size", type=int, default=DetectorSettings.detect_size)
    parser.add_argument("--assets", type=Path, default=ASSETS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    data = phone_jpeg(args.assets)
    specs = {
        "mtcnn (offline default)": stored_mtcnn(),  # as the service runs it
        "mtcnn (wheel's files)": "mtcnn",  # as published, PRelu and all
    }
    for label, file in [
        ("yunet", "yunet_s_dynamic.onnx"),
        ("scrfd_500m", "scrfd_500m.onnx"),
        ("scrfd_2.5g", "scrfd_2.5g.onnx"),
    ]:
        if (args.assets / file).is_file():
            specs[label] = f"{label.split('_')[0]}:{args.assets / file}"

    print(describe_cpu(), "(this benchmark pins itself to one of them)")
    print(
        f"12 MP phone JPEG, 4032x3024, Orientation 6, {len(data) / 1e6:.1f} MB; one core; "
        f"median of {args.runs} runs, ms; draft_long_side={args.draft_long_side}, "
        f"detect_size={args.detect_size}"
    )
    print(f"{'detector':<26}{'decode':>8}{'orient':>8}{'detect':>8}{'align':>8}{'total':>8}  goal")
    for label, spec in specs.items():
        result = measure(
            spec,
            data,
            args.runs,
            DecodeSettings(draft_long_side=args.draft_long_side),
            args.detect_size,
        )
        total = sum(result.values())
        verdict = "met" if total <= GOAL_MS else "missed"
        print(
            f"{label:<26}"
            + "".join(f"{v:8.1f}" for v in result.values())
            + f"{total:8.1f}  {verdict} ({GOAL_MS:.0f} ms)"
        )


if __name__ == "__main__":
    main()
