"""The README picture: photo / aligned crop / toon, per generator, one row per face.

make import-animegan   # optional: adds the AnimeGANv3 column (weights from ../shared/models)
make grid              # writes docs/images/grid.jpg

Faces: the astronaut (scikit-image), the six of insightface's t1.jpg, and each upright photo in
../shared/models/faces (TOONIFY_TEST_ASSETS) when it is there.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import bentoml
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageOps

from model_store import MODEL_FILE, detector_spec
from preprocess import align_face, create_detector, read_photo
from toonify.generation.generator import OnnxGenerator
from toonify.generation.signature import GeneratorSignature

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TOONIFY_TEST_ASSETS", ROOT.parent / "shared" / "models"))

TILE = 256
GENERATORS = [
    ("toon-filter (offline default)", "toon-filter:latest"),
    ("AnimeGANv3", "animeganv3:latest"),
]


def photos() -> list[tuple[str, Image.Image, int]]:
    """(label, photo, how many of its faces) in row order."""
    t1 = Path(importlib.util.find_spec("insightface").origin).parent / "data/images/t1.jpg"
    found = [
        ("astronaut (scikit-image)", Image.fromarray(skimage.data.astronaut()), 1),
        ("t1.jpg (insightface)", Image.open(t1).convert("RGB"), 6),
    ]
    faces = ASSETS / "faces"
    if faces.is_dir():  # the EXIF-rotated copies and the astronaut are faces already shown
        for path in sorted(faces.iterdir()):
            if "orientation" not in path.name and not path.name.startswith("astronaut"):
                found.append((path.name, read_photo(path.read_bytes()), 1))
    return found


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


def labelled(image: Image.Image, text: str, side: int = TILE) -> Image.Image:
    tile = ImageOps.pad(image, (side, side), color=(255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, side - 18, side, side), fill=(0, 0, 0))
    draw.text((4, side - 16), text, fill=(255, 255, 255))
    return tile


def main() -> None:
    detector = create_detector(detector_spec(bentoml.models.get("mtcnn:latest")))
    generators = load_generators()
    rows = []
    for name, photo, count in photos():
        for index, face in enumerate(detector.detect(photo)[:count]):
            aligned = align_face(photo, face.landmarks, size=512)
            crop = np.asarray(aligned.image)[None]
            label = name if count == 1 else f"{name}, face {index}"
            tiles = [labelled(photo, label), labelled(aligned.image, "FFHQ-aligned")]
            tiles += [labelled(Image.fromarray(gen(crop)[0]), text) for text, gen in generators]
            rows.append(tiles)
    save_grid(rows, TILE, "grid.jpg", quality=88)


def save_grid(rows: list[list[Image.Image]], side: int, name: str, quality: int) -> None:
    """Square tiles of ``side`` pixels, row by row, as docs/images/NAME."""
    grid = Image.new("RGB", (side * len(rows[0]), side * len(rows)), "white")
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            grid.paste(tile, (c * side, r * side))
    out = ROOT / "docs" / "images" / name
    grid.save(out, quality=quality)
    print(f"wrote {out}: {len(rows)} faces")


if __name__ == "__main__":
    main()
