"""The README picture: photo / aligned crop / toon, per generator, from package-shipped photos.

make import-animegan   # optional: adds the AnimeGANv3 column (weights from ../shared/models)
make grid              # writes docs/images/grid.jpg
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import bentoml
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageOps

from model_store import MODEL_FILE, detector_spec
from preprocess import align_face, create_detector
from toonify.generator import GeneratorSignature, OnnxGenerator

ROOT = Path(__file__).resolve().parents[1]

TILE = 256
GENERATORS = [
    ("toon-filter (offline default)", "toon-filter:latest"),
    ("AnimeGANv3", "animeganv3:latest"),
]


def photos() -> list[tuple[str, Image.Image]]:
    t1 = Path(importlib.util.find_spec("insightface").origin).parent / "data/images/t1.jpg"
    return [
        ("astronaut (scikit-image)", Image.fromarray(skimage.data.astronaut())),
        ("t1.jpg (insightface)", Image.open(t1).convert("RGB")),
    ]


def load_generators() -> list[tuple[str, OnnxGenerator]]:
    loaded = []
    for label, tag in GENERATORS:
        try:
            model = bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            print(f"skipping {label}: {tag} is not in the model store", file=sys.stderr)
            continue
        signature = GeneratorSignature.from_metadata(model.info.metadata)
        loaded.append((label, OnnxGenerator(model.path_of(MODEL_FILE), signature)))
    return loaded


def labelled(image: Image.Image, text: str) -> Image.Image:
    tile = ImageOps.pad(image, (TILE, TILE), color=(255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, TILE - 18, TILE, TILE), fill=(0, 0, 0))
    draw.text((4, TILE - 16), text, fill=(255, 255, 255))
    return tile


def main() -> None:
    detector = create_detector(detector_spec(bentoml.models.get("mtcnn:latest")))
    generators = load_generators()
    rows = []
    for name, photo in photos():
        face = detector.detect(photo)[0]
        aligned = align_face(photo, face.landmarks, size=512)
        crop = np.asarray(aligned.image)[None]
        tiles = [labelled(photo, name), labelled(aligned.image, "FFHQ-aligned")]
        tiles += [labelled(Image.fromarray(gen(crop)[0]), label) for label, gen in generators]
        rows.append(tiles)
    grid = Image.new("RGB", (TILE * len(rows[0]), TILE * len(rows)), "white")
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            grid.paste(tile, (c * TILE, r * TILE))
    out = ROOT / "docs" / "images" / "grid.jpg"
    grid.save(out, quality=88)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
