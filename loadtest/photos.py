"""The uploads a load test sends: real photos and phone-like variants made from them."""

from __future__ import annotations

import importlib.util
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

import skimage.data
from PIL import Image

ASSETS = Path(
    os.environ.get("TOONIFY_TEST_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "models")
)


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    has_face: bool
    weight: float  # relative frequency in the mix


def _encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def phone_jpeg(photo: Image.Image, size: tuple[int, int] = (4032, 3024)) -> bytes:
    """A 12 MP JPEG stored sideways with EXIF Orientation 6, as phones write portraits."""
    canvas = photo.resize(size, Image.Resampling.BILINEAR)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(canvas.transpose(Image.Transpose.ROTATE_90), quality=90, exif=exif.tobytes())


def no_face_photo(fmt: str = "JPEG", size: tuple[int, int] = (4032, 3024)) -> bytes:
    """A 12 MP photo with no face in it (scikit-image's coffee cup), as a phone or an editor
    would save it: the upload most often answered 422 no_face."""
    photo = Image.fromarray(skimage.data.coffee()).resize(size, Image.Resampling.BILINEAR)
    return _encode(photo, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def build_pool() -> list[Upload]:
    astronaut = Image.fromarray(skimage.data.astronaut())
    t1 = Path(importlib.util.find_spec("insightface").origin).parent / "data/images/t1.jpg"
    pool = [
        Upload("astronaut.jpg", _encode(astronaut, quality=92), True, 20),
        Upload("t1.jpg", t1.read_bytes(), True, 10),
        Upload("astronaut.png", _encode(astronaut, "PNG"), True, 8),
        Upload("phone-12mp-orientation6.jpg", phone_jpeg(astronaut), True, 20),
        Upload("coffee-no-face.jpg", _encode(Image.fromarray(skimage.data.coffee())), False, 8),
    ]
    faces = ASSETS / "faces"
    if faces.is_dir():
        shared = sorted(p for p in faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        pool += [Upload(p.name, p.read_bytes(), True, 30 / len(shared)) for p in shared]
        pexels = faces / "pexels_two_women_on_phones.jpg"
        if pexels.is_file():
            photo = Image.open(pexels).convert("RGB")
            pool.append(Upload("pexels-12mp-orientation6.jpg", phone_jpeg(photo), True, 10))
    return pool


# Request options in plausible proportions: most people want their face, some the whole photo.
OPTION_MIX = (
    ({}, 65),
    ({"paste_back": "true"}, 15),
    ({"all_faces": "true"}, 8),
    ({"return_aligned": "true"}, 4),
    ({"format": "webp"}, 5),
    ({"format": "png", "size": "256"}, 3),
)


def choose(pool: list[Upload], rng: random.Random) -> tuple[Upload, dict[str, str]]:
    upload = rng.choices(pool, weights=[u.weight for u in pool])[0]
    options = rng.choices([o for o, _ in OPTION_MIX], weights=[w for _, w in OPTION_MIX])[0]
    return upload, dict(options)
