"""Paste generated crops back into the photo through the inverse of each face's quad."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageFilter

from .align import AlignedFace


@functools.lru_cache(maxsize=8)
def feather_mask(size: int, feather: float = 0.06) -> Image.Image:
    """An L-mode square that is opaque inside and fades to 0 over ``feather`` of the size."""
    margin = max(1, round(size * feather))
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (margin, margin, size - margin, size - margin))
    return mask.filter(ImageFilter.GaussianBlur(margin / 2))


def _photo_to_crop(face: AlignedFace, origin: tuple[int, int]) -> tuple[float, ...]:
    """Pillow AFFINE data mapping a photo region that starts at ``origin`` to crop pixels.

    Pillow samples at pixel centres (pixel i spans [i, i + 1]); photo coordinates put pixel i's
    centre at i, hence the half-pixel shift.
    """
    corner = np.asarray(origin, dtype=np.float64) - 0.5
    u0, ux, uy = face.photo_to_crop(np.stack([corner, corner + (1, 0), corner + (0, 1)]))
    return (
        ux[0] - u0[0],
        uy[0] - u0[0],
        u0[0],
        ux[1] - u0[1],
        uy[1] - u0[1],
        u0[1],
    )


def paste_back(
    photo: Image.Image,
    faces: list[AlignedFace],
    crops: list[Image.Image],
    *,
    in_place: bool = False,
) -> Image.Image:
    """The photo with each crop warped into its face's quad, blended through a feathered edge.

    ``crops[i]`` replaces ``faces[i].image`` (any square size; it is resized to match). With
    ``in_place`` an RGB photo is pasted into and returned (no copy of a large photo).
    """
    if len(faces) != len(crops):
        raise ValueError(f"{len(faces)} faces but {len(crops)} crops")
    if photo.mode != "RGB":
        result = photo.convert("RGB")
    else:
        result = photo if in_place else photo.copy()
    for face, crop in zip(faces, crops, strict=True):
        size = face.image.width
        if crop.size != (size, size):
            crop = crop.resize((size, size), Image.Resampling.LANCZOS)
        left, top = np.floor(face.quad.min(axis=0)).astype(int)
        right, bottom = np.ceil(face.quad.max(axis=0)).astype(int) + 1
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, result.width), min(bottom, result.height)
        if right <= left or bottom <= top:
            continue
        region = (right - left, bottom - top)
        data = _photo_to_crop(face, (left, top))
        warped = crop.convert("RGB").transform(
            region, Image.Transform.AFFINE, data, Image.Resampling.BICUBIC
        )
        mask = feather_mask(size).transform(
            region, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR
        )
        result.paste(warped, (left, top), mask)
    return result
