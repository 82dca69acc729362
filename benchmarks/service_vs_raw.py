"""Saturated throughput of the served pipeline against a plain in-process ONNX Runtime loop.

    python -m benchmarks.service_vs_raw [--images 24] [--concurrency 8] [--rounds 3]

Same model, same machine, same run: AnimeGANv3 at 512 from ../shared/models (or the offline
toon-filter without it). Rounds alternate raw loop / service so drift hits both alike.

- raw: one ONNX Runtime session with default options in this process, images fed one at a time
  (the model's batch axis is fixed at 1), input already converted: the model's own ceiling.
- pipeline: the same work as one /toonify request (decode, detect, align, generate, encode),
  one photo at a time in this process: what the service adds beyond the model, without serving.
- service: `bentoml serve service:Toonify` with the same model; `--concurrency` clients POST
  the astronaut photo to /toonify until `--images` are answered. This includes everything the
  service does per photo: HTTP, decode, detect, align, transfer, generate, encode.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-bench-")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from model_store import MODEL_FILE  # noqa: E402
from model_store.build import build_defaults, import_generator  # noqa: E402
from preprocess import align_face, create_detector  # noqa: E402
from tools.served import Served  # noqa: E402  the same harness the tests use
from toonify.generation.signature import GeneratorSignature  # noqa: E402

GOAL = 0.95


def register_model(assets: Path):
    build_defaults()
    path = assets / "animeganv3_tiny_cute.onnx"
    if not path.is_file():
        import bentoml

        print(f"{path} not found: measuring the offline toon-filter instead", file=sys.stderr)
        return bentoml.models.get("toon-filter:latest"), "toon-filter (offline default)"
    signature = GeneratorSignature(layout="NHWC", value_range=(-1.0, 1.0), size=512)
    model = import_generator(path, "animeganv3", signature, "non-commercial use only")
    return model, "AnimeGANv3 tiny Cute, 512x512"


def raw_throughput(model_path: str, tensor: np.ndarray, images: int) -> float:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: tensor})  # warm-up, as the service does before it is ready
    started = time.perf_counter()
    for _ in range(images):
        session.run(None, {name: tensor})
    return images / (time.perf_counter() - started)


def pipeline_throughput(model_path: str, signature, photo: bytes, images: int) -> float:
    from responses import encode_image

    from preprocess.pipeline import prepare_photo
    from toonify.generation.generator import OnnxGenerator

    generator = OnnxGenerator(model_path, signature)
    detector = create_detector("mtcnn")
    generator.warm_up()
    started = time.perf_counter()
    for _ in range(images):
        prepared = prepare_photo(photo, detector, crop_size=signature.size)
        crops = np.stack([np.asarray(a.image) for a in prepared.aligned])
        toons = generator(crops, prepared.features)
        encode_image(Image.fromarray(toons[0]), "jpeg")
    return images / (time.perf_counter() - started)


def service_throughput(url: str, photo: bytes, images: int, concurrency: int) -> float:
    def post(_: int) -> None:
        response = httpx.post(f"{url}/toonify", content=photo, timeout=300)
        response.raise_for_status()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(concurrency)))  # warm every path once
        started = time.perf_counter()
        list(pool.map(post, range(images)))
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--assets",
        type=Path,
        default=Path(os.environ.get("TOONIFY_TEST_ASSETS", ROOT.parent / "shared" / "models")),
    )
    args = parser.parse_args()

    model, label = register_model(args.assets)
    signature = GeneratorSignature.from_metadata(model.info.metadata)
    astronaut = Image.fromarray(skimage.data.astronaut())
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()
    face = create_detector("mtcnn").detect(astronaut)[0]
    crop = np.asarray(align_face(astronaut, face.landmarks, size=signature.size).image)[None]
    tensor = signature.to_model_input(crop)

    log = Path(tempfile.mkdtemp()) / "serve.log"
    server = Served({"TOONIFY_GENERATOR_MODEL": str(model.tag)}, log)
    raw, pipeline, served = [], [], []
    try:
        for round_number in range(1, args.rounds + 1):
            raw.append(raw_throughput(model.path_of(MODEL_FILE), tensor, args.images))
            pipeline.append(
                pipeline_throughput(model.path_of(MODEL_FILE), signature, photo, args.images)
            )
            served.append(service_throughput(server.url, photo, args.images, args.concurrency))
            print(
                f"round {round_number}: raw {raw[-1]:.2f}, in-process pipeline "
                f"{pipeline[-1]:.2f}, service {served[-1]:.2f} images/s",
                flush=True,
            )
    finally:
        server.stop()

    raw_median, served_median = statistics.median(raw), statistics.median(served)
    pipeline_median = statistics.median(pipeline)
    ratio = served_median / raw_median
    print(
        f"\nmodel: {label}; {os.cpu_count()} CPUs; {args.images} images x {args.rounds} rounds, "
        f"{args.concurrency} concurrent clients"
    )
    print(f"raw ONNX Runtime loop      {raw_median:6.2f} images/s (median)")
    print(f"in-process pipeline        {pipeline_median:6.2f} images/s (median)")
    print(f"service /toonify saturated {served_median:6.2f} images/s (median)")
    print(f"ratio service / pipeline   {served_median / pipeline_median:6.3f}")
    print(
        f"ratio service / raw        {ratio:6.3f}  goal >= {GOAL}: "
        f"{'met' if ratio >= GOAL else 'missed'}"
    )


if __name__ == "__main__":
    main()
