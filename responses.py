"""What a toonify request asks for, and how the answer is encoded. No HTTP objects here."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class BadOption(ValueError):
    """A request option with a value we cannot use."""

    code = "bad_option"


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise BadOption(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class ToonifyOptions:
    face_index: int | None = None  # None: the largest face
    all_faces: bool = False
    paste_back: bool = False
    return_aligned: bool = False
    format: str = "jpeg"
    size: int | None = None  # side of each face image; with paste_back, the photo's long side
    response: str = "image"  # or "json"
    quality: int = 90

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> ToonifyOptions:
        """Options from query parameters or form fields; unknown names are refused."""
        known = {"face_index", "all_faces", "paste_back", "return_aligned", "format", "size",
                 "response", "quality"}  # fmt: skip
        unknown = set(fields) - known
        if unknown:
            raise BadOption(f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            options = cls(
                face_index=int(fields["face_index"]) if fields.get("face_index") else None,
                all_faces=_flag(fields.get("all_faces", "false")),
                paste_back=_flag(fields.get("paste_back", "false")),
                return_aligned=_flag(fields.get("return_aligned", "false")),
                format=fields.get("format", "jpeg").lower().replace("jpg", "jpeg"),
                size=int(fields["size"]) if fields.get("size") else None,
                response=fields.get("response", "image").lower(),
                quality=int(fields.get("quality", 90)),
            )
        except ValueError as exc:
            raise BadOption(str(exc)) from None
        if options.format not in FORMATS:
            raise BadOption(f"format must be one of {sorted(FORMATS)}, not {options.format!r}")
        if options.response not in ("image", "json"):
            raise BadOption("response must be image or json")
        if options.size is not None and not 16 <= options.size <= 4096:
            raise BadOption("size must be between 16 and 4096")
        if options.face_index is not None and options.face_index < 0:
            raise BadOption("face_index counts from 0, largest face first")
        if not 1 <= options.quality <= 100:
            raise BadOption("quality must be between 1 and 100")
        return options

    @property
    def media_type(self) -> str:
        return FORMATS[self.format]


def encode_image(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=3)  # level 6 costs 3x the time for ~5%
    else:
        image.save(buffer, fmt.upper(), quality=quality)
    return buffer.getvalue()


def face_sheet(
    toons: np.ndarray, aligned: np.ndarray | None = None, size: int | None = None
) -> Image.Image:
    """One image of the toon faces side by side, each above its aligned photo crop if given."""
    rows = [toons] if aligned is None else [toons, aligned]
    side = size or toons.shape[1]
    sheet = Image.new("RGB", (side * len(toons), side * len(rows)))
    for row, images in enumerate(rows):
        for column, pixels in enumerate(images):
            tile = Image.fromarray(pixels)
            if tile.width != side:
                tile = tile.resize((side, side), Image.Resampling.LANCZOS)
            sheet.paste(tile, (column * side, row * side))
    return sheet


def encode_face_sheet(
    toons: np.ndarray, aligned: np.ndarray | None, options: ToonifyOptions
) -> bytes:
    return encode_image(face_sheet(toons, aligned, options.size), options.format, options.quality)


def shrink_to(image: Image.Image, long_side: int | None) -> Image.Image:
    if long_side is None or max(image.size) <= long_side:
        return image
    scale = long_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
