"""Each precision side by side, to judge the quality bar by eye: docs/images/precision-grid.jpg.

    python docs/make_precision_grid.py [MODEL.onnx --layout NHWC]   (default: AnimeGANv3)

Rows: real faces held out from int8 calibration. Columns: fp32 (ONNX Runtime), bf16 and int8
(OpenVINO; int8 from NNCF, calibrated on t1.jpg's faces), and the int8 difference x8. Each label
carries that face's PSNR against fp32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model_store.build import calibration_faces, export_openvino_ir, held_out_faces, quantize_int8
from toonify.generation.generator import OnnxGenerator
from toonify.generation.signature import GeneratorSignature

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TOONIFY_TEST_ASSETS", ROOT.parent / "shared" / "models"))
TILE = 256


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    error = np.mean((reference.astype(float) - other.astype(float)) ** 2)
    return 99.0 if error == 0 else 10 * np.log10(255**2 / error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default=str(ASSETS / "animeganv3_tiny_cute.onnx"))
    parser.add_argument("--layout", default="NHWC")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "precision-grid.jpg"))
    args = parser.parse_args()

    source = Path(args.model)
    signature = GeneratorSignature(args.layout, (-1.0, 1.0), 512)
    staging = Path(tempfile.mkdtemp())
    runs = {
        "fp32": OnnxGenerator(source, signature, backend="onnxruntime"),
        "bf16": OnnxGenerator(
            export_openvino_ir(source, staging), signature, backend="openvino", precision="bf16"
        ),
        "int8": OnnxGenerator(
            quantize_int8(source, signature, calibration_faces(512), staging),
            signature,
            backend="openvino",
            precision="int8",
        ),
    }
    faces = held_out_faces(512)
    columns = ["fp32", "bf16", "int8", "int8 - fp32, x8"]
    sheet = Image.new("RGB", (TILE * len(columns), (TILE + 18) * len(faces) + 18), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(columns):
        draw.text((column * TILE + 4, 2), title, fill="black")
    for row, face in enumerate(faces):
        outputs = {name: run(face[None])[0] for name, run in runs.items()}
        difference = np.clip(
            128 + 8 * (outputs["int8"].astype(int) - outputs["fp32"].astype(int)), 0, 255
        ).astype(np.uint8)
        tiles = [*outputs.values(), difference]
        labels = ["", *(f"{psnr(outputs['fp32'], outputs[n]):.1f} dB" for n in ("bf16", "int8"))]
        top = 18 + row * (TILE + 18)
        for column, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile).resize((TILE, TILE)), (column * TILE, top))
            if column < len(labels) and labels[column]:
                draw.text((column * TILE + 4, top + TILE + 2), labels[column], fill="black")
    sheet.save(args.out, quality=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
