"""CPU milliseconds to find the faces and their landmarks, MediaPipe against MTCNN, one core.

    python -m benchmarks.face_stage [--runs 21] [--pipeline] [--assets ../shared/models]

Three photos, as the pipeline hands them to the detector (decoded, the stored pixels with their
EXIF orientation): the 512 px astronaut (a selfie's framing), a 12 MP phone JPEG stored turned
(benchmarks.preprocess_stages makes it), and insightface's six-face group photo t1.jpg. Both
detectors come from a scratch model store built as ``build-defaults`` builds it. The figure is
the process's CPU time per call (median of ``--runs``), so another load on the machine moves it
less than wall time; the ratio is MediaPipe's over MTCNN's, measured in the same run.

``--pipeline`` adds the whole in-process pipeline per photo with each detector: what the
preprocessing worker and the generator do for one request (decode, detect, align, generate
with the offline toon-filter, paste nothing back, encode), one core, CPU time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess import DecodeSettings, Orientation, create_detector, decode_image, to_rgb
from preprocess.detect import DetectorSettings
from tools.machine import describe_cpu

from .preprocess_stages import ASSETS, phone_jpeg


def photos(assets: Path) -> dict[str, bytes]:
    import importlib.util

    import skimage.data

    def png(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    found = {"512 px selfie (astronaut)": png(Image.fromarray(skimage.data.astronaut()))}
    found["12 MP phone JPEG (Orientation 6)"] = phone_jpeg(assets)
    insightface = importlib.util.find_spec("insightface")
    if insightface is not None:
        group = Path(insightface.origin).parent / "data" / "images" / "t1.jpg"
        found["group photo, six faces (t1.jpg)"] = group.read_bytes()
    return found


def pipeline_cpu_ms(detector, data: bytes, generator, runs: int) -> float:
    """CPU ms for one /toonify request's work, in this process (toonify.photos.worker)."""
    from toonify.levels import Level
    from toonify.photos.worker import PhotoWork
    from toonify.schema import ToonifyOptions, Toons
    from toonify.settings import Settings

    work, options = PhotoWork(detector, Settings()), ToonifyOptions()

    def once() -> None:
        job = work.prepare(data, options, Level.full)
        pixels = generator(job.crops, job.features)
        toons = Toons(
            pixels=pixels, queued_s=0, generate_s=0, batch_size=1, generated_size=pixels.shape[1]
        )
        work.finish(job, toons, options)

    once()
    times = []
    for _ in range(runs):
        start = time.process_time()
        once()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def detectors() -> dict[str, object]:
    os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-bench-")
    from model_store import detector_spec
    from model_store.build import import_detector
    from model_store.mediapipe import import_mediapipe
    from preprocess.detectors.mtcnn import LICENCE, packaged_weights_dir

    settings = DetectorSettings(threads=1)
    mtcnn = import_detector(packaged_weights_dir(), "mtcnn", "mtcnn", LICENCE)
    return {
        "mediapipe": create_detector(detector_spec(import_mediapipe()), settings),
        "mtcnn": create_detector(detector_spec(mtcnn), settings),
    }


def cpu_ms(detector, image: Image.Image, orientation: Orientation, runs: int) -> tuple[float, int]:
    faces = detector.detect(image, orientation)  # warm
    times = []
    for _ in range(runs):
        start = time.process_time()
        detector.detect(image, orientation)
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times), len(faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--pipeline", action="store_true", help="also the whole request's work")
    parser.add_argument("--assets", type=Path, default=ASSETS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # the last core: the first takes more interrupts
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    found = detectors()
    print(describe_cpu(), "(this benchmark pins itself to one of them)")
    print(f"CPU ms per photo to find faces and landmarks, median of {args.runs}; one core")
    print(f"{'photo':<36}{'mediapipe':>12}{'mtcnn':>12}{'ratio':>8}  faces (mediapipe/mtcnn)")
    ratios = []
    for label, data in photos(args.assets).items():
        image = decode_image(data, DecodeSettings())
        orientation, stored = Orientation.of(image), to_rgb(image)
        (mp_ms, mp_faces), (mt_ms, mt_faces) = (
            cpu_ms(found[name], stored, orientation, args.runs) for name in ("mediapipe", "mtcnn")
        )
        ratios.append(mp_ms / mt_ms)
        print(
            f"{label:<36}{mp_ms:>12.2f}{mt_ms:>12.2f}{mp_ms / mt_ms:>8.2f}  {mp_faces}/{mt_faces}"
        )
    print(f"geometric mean ratio {float(np.exp(np.mean(np.log(ratios)))):.2f}")
    if args.pipeline:
        import bentoml

        from model_store import load_generator
        from model_store.build import build_defaults

        build_defaults()
        generator = load_generator(bentoml.models.get("toon-filter:latest"), threads=1)
        print(
            f"\nCPU ms per photo for the whole request's work in one process, median of {args.runs}"
        )
        print(f"{'photo':<36}{'mediapipe':>12}{'mtcnn':>12}{'ratio':>8}")
        for label, data in photos(args.assets).items():
            mp_ms, mt_ms = (
                pipeline_cpu_ms(found[name], data, generator, args.runs)
                for name in ("mediapipe", "mtcnn")
            )
            print(f"{label:<36}{mp_ms:>12.1f}{mt_ms:>12.1f}{mp_ms / mt_ms:>8.2f}")


if __name__ == "__main__":
    main()
