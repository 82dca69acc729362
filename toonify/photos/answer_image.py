"""The answer image: the toons pasted back into the photo, or laid out side by side, encoded.

Its size follows from the options, the photo and the number of faces, so an answer over the
output budget is refused before the generator runs: a small upload cannot ask for a huge image.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from preprocess import AlignedFace, paste_back
from preprocess.pipeline import PreparedPhoto

from ..errors import OutputTooLarge
from ..schema import OutputFormat, ToonifyOptions

# The largest side each encoder writes (WebP's format stores 14-bit dimensions).
MAX_SIDE = {OutputFormat.jpeg: 65_535, OutputFormat.png: 1 << 30, OutputFormat.webp: 16_383}


def answer_size(
    options: ToonifyOptions,
    num_faces: int,
    photo_size: tuple[int, int],
    crop_size: int,
    max_pixels: int,
) -> tuple[int, int]:
    """Width and height of the answer; raises OutputTooLarge past the budget or the format.

    With ``paste_back`` the photo keeps its aspect: ``size`` is its long side (never enlarged),
    and without ``size`` a photo over the budget is scaled down to fit it rather than refused.
    """
    if options.paste_back:
        width, height = photo_size
        scale = min(1.0, options.size / max(width, height)) if options.size else 1.0
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
        size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    else:
        side = options.size or crop_size
        size = (side * num_faces, side * (2 if options.return_aligned else 1))
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise OutputTooLarge(
            f"The answer would be {size[0]}x{size[1]} pixels ({pixels / 1e6:.0f} MP); the limit "
            f"is {max_pixels / 1e6:.0f} MP. Ask for a smaller size, one face instead of "
            f"all_faces, or leave out return_aligned."
        )
    if max(size) > MAX_SIDE[options.format]:
        raise OutputTooLarge(
            f"The answer would be {size[0]}x{size[1]} pixels, over the {MAX_SIDE[options.format]} "
            f"pixel side {options.format.value} allows. Ask for a smaller size or another format."
        )
    return size


def paste_answer(prepared: PreparedPhoto, toons: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The photo at the answer's size with each toon pasted into its face's quad.

    The photo is scaled first and the quads with it, so pasting costs the answer's pixels, not
    the upload's; the toons are pasted into the photo's own pixels (taken from ``prepared``), so
    a 12 MP answer holds one copy of the photo, not three.
    """
    photo = prepared.take_upright(size)
    faces = prepared.aligned
    if size != prepared.size:
        scale = size[0] / prepared.size[0]
        faces = [AlignedFace(image=face.image, quad=face.quad * scale) for face in faces]
    return paste_back(photo, faces, [Image.fromarray(toon) for toon in toons], in_place=True)


def face_sheet(toons: np.ndarray, aligned: np.ndarray | None, side: int) -> Image.Image:
    """The toon faces side by side, each above its aligned photo crop if given."""
    rows = [toons] if aligned is None else [toons, aligned]
    sheet = Image.new("RGB", (side * len(toons), side * len(rows)))
    for row, images in enumerate(rows):
        for column, pixels in enumerate(images):
            tile = Image.fromarray(pixels)
            if tile.width != side:
                tile = tile.resize((side, side), Image.Resampling.LANCZOS)
            sheet.paste(tile, (column * side, row * side))
    return sheet


def encode_image(image: Image.Image, fmt: OutputFormat, quality: int = 90) -> bytes:
    """The answer's bytes: its pixels and nothing of the upload. A pasted-back answer is the
    photo's own decoded image, and Pillow writes back what it read of it unless told not to
    (a JPEG's comment, a PNG's ICC profile)."""
    image.info = {}
    buffer = io.BytesIO()
    if fmt is OutputFormat.png:
        image.save(buffer, "PNG", compress_level=3)  # level 6 costs 3x the time for ~5%
    else:
        image.save(buffer, fmt.value.upper(), quality=quality)
    return buffer.getvalue()
