"""Measured cost per 1000 images on this machine, read from the service's own /metrics.

    python -m benchmarks.cost [--images 32] [--concurrency 8]

For the offline toon-filter and AnimeGANv3 (from ../shared/models, skipped without it), a real
`bentoml serve` answers the astronaut photo (512x512 JPEG) twice over: one request at a time, as
the 2020 site's users mostly did, and with --concurrency clients at once (batching). The cost is
the exported toonify_billed_usd_total over toonify_images_total{outcome="ok"} at the
cloudrun-2020 profile (2 vCPU, 4 GiB, request-based billing, 100 ms units).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-cost-")

import httpx  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from model_store.build import build_defaults, import_generator  # noqa: E402
from tools.served import Served, scrape  # noqa: E402
from toonify.generation.signature import GeneratorSignature  # noqa: E402

USD = 'toonify_billed_usd_total{profile="cloudrun-2020"}'
SECONDS = 'toonify_billed_seconds_total{profile="cloudrun-2020"}'
OK = 'toonify_images_total{outcome="ok"}'


def generators(assets: Path) -> list[tuple[str, str]]:
    build_defaults()
    found = [("toon-filter (offline default)", "toon-filter:latest")]
    path = assets / "animeganv3_tiny_cute.onnx"
    if path.is_file():
        signature = GeneratorSignature(layout="NHWC", value_range=(-1.0, 1.0), size=512)
        import_generator(path, "animeganv3", signature, "non-commercial use only")
        found.append(("AnimeGANv3 tiny Cute 512", "animeganv3:latest"))
    else:
        print(f"{path} not found: AnimeGANv3 skipped", file=sys.stderr)
    return found


def measure(url: str, photo: bytes, images: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(base_url=url, timeout=300, limits=limits) as client:
        for _ in range(2):
            client.post("/toonify", content=photo).raise_for_status()  # warm
        time.sleep(1.2)  # let the warm-up's busy period close
        before = scrape(url)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for response in pool.map(
                lambda _: client.post("/toonify", content=photo), range(images)
            ):
                response.raise_for_status()
        wall = time.perf_counter() - started
    time.sleep(1.2)
    after = scrape(url)
    ok = after[OK] - before[OK]
    return {
        "images_per_s": images / wall,
        "billed_s_per_image": (after[SECONDS] - before[SECONDS]) / ok,
        "usd_per_1000": 1000 * (after[USD] - before[USD]) / ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--assets",
        type=Path,
        default=Path(os.environ.get("TOONIFY_TEST_ASSETS", ROOT.parent / "shared" / "models")),
    )
    args = parser.parse_args()

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=92)
    photo = buffer.getvalue()
    rows = []
    for label, tag in generators(args.assets):
        server = Served({"TOONIFY_GENERATOR_MODEL": tag}, Path(tempfile.mkdtemp()) / "serve.log")
        try:
            for mode, concurrency in [
                ("one at a time", 1),
                (f"{args.concurrency} at once", args.concurrency),
            ]:
                result = measure(server.url, photo, args.images, concurrency)
                rows.append((label, mode, result))
                print(
                    f"{label:<30} {mode:<14} {result['images_per_s']:6.2f} images/s  "
                    f"{result['billed_s_per_image']:6.3f} billed s/image  "
                    f"${result['usd_per_1000']:.4f} per 1000",
                    flush=True,
                )
        finally:
            server.stop()

    print("\n| generator | load | images/s | billed s per image | $ per 1000 images |")
    print("|---|---|---|---|---|")
    for label, mode, r in rows:
        print(
            f"| {label} | {mode} | {r['images_per_s']:.2f} | {r['billed_s_per_image']:.3f} | "
            f"${r['usd_per_1000']:.4f} |"
        )
    print("| seed (2020 site, 5 s per image) | one at a time | 0.2 | 5.0 | $0.29 |")


if __name__ == "__main__":
    main()
