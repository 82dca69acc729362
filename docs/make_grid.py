"""The README picture: photo / aligned crop / toon, per generator, one row per face.

make import-animegan   # optional: adds the AnimeGANv3 column (weights from ../shared/models)
make grid              # writes docs/images/grid.jpg

The offline default has two columns: before (MTCNN's five points, the features where FFHQ puts a
frontal face's: what it drew before the mesh drove it) and after (MediaPipe's Face Mesh: the
alignment and the features from the face's own landmarks, as the service runs it now).

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
from preprocess.pipeline import crop_features
from toonify.generation.generator import OnnxGenerator
from toonify.generation.signature import GeneratorSignature

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TOONIFY_TEST_ASSETS", ROOT.parent / "shared" / "models"))

TILE = 256
GENERATORS = [
    ("toon-filter", "toon-filter:latest"),
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


def same_faces(found: list, reference: list) -> list:
    """``found`` in the order of ``reference`` (the face of each reference box that overlaps it
    most), so a row shows one face whichever detector found it."""
    from preprocess.detect import box_iou

    return [max(found, key=lambda face: box_iou(face.box, ref.box)) for ref in reference]


def main() -> None:
    mesh = create_detector(detector_spec(bentoml.models.get("mediapipe-face:latest")))
    mtcnn = create_detector(detector_spec(bentoml.models.get("mtcnn:latest")))
    generators = load_generators()
    rows = []
    for name, photo, count in photos():
        before_faces = mtcnn.detect(photo)[:count]
        for index, (before, after) in enumerate(
            zip(before_faces, same_faces(mesh.detect(photo), before_faces), strict=True)
        ):
            label = name if count == 1 else f"{name}, face {index}"
            tiles = [labelled(photo, label)]
            aligned = align_face(photo, after.landmarks, size=512)
            old = align_face(photo, before.landmarks, size=512)
            crop, features = np.asarray(aligned.image)[None], crop_features(after, aligned)[None]
            tiles.append(labelled(aligned.image, "aligned by Face Mesh"))
            for text, gen in generators:
                if gen.takes_features:
                    toon = gen(np.asarray(old.image)[None])[0]  # FFHQ's frontal template
                    tiles.append(labelled(Image.fromarray(toon), f"{text}: before"))
                    text = f"{text}: now"
                tiles.append(labelled(Image.fromarray(gen(crop, features)[0]), text))
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
