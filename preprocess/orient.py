"""EXIF orientation as data: how to turn the stored pixels upright, and where an upright pixel is
stored.

Phones store a photo as the sensor read it and say in EXIF tag 0x0112 how to show it. Turning
12 MP upright costs as long as detecting the face (a 3 MP transpose: ~5 ms), so the pipeline
turns only what it looks at upright: the detector's small copy, and the answer photo after it
has been scaled. Alignment samples the stored pixels through ``to_stored``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

ORIENTATION_TAG = 0x0112
# Pillow's transpose for each EXIF value (as ImageOps.exif_transpose uses them).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Orientation:
    """One of the eight EXIF orientations (1: stored upright)."""

    value: int = 1

    @classmethod
    def of(cls, image: Image.Image) -> Orientation:
        """The photo's orientation tag; 1 when it is missing, out of range or unreadable."""
        try:
            value = image.getexif().get(ORIENTATION_TAG, 1)
        except Exception as exc:  # a malformed EXIF block must not cost the user their photo
            logger.warning("ignoring unreadable EXIF orientation: %s", exc)
            return cls()
        return cls(value if isinstance(value, int) and value in _TRANSPOSE else 1)

    @property
    def swaps_axes(self) -> bool:
        return self.value >= 5

    def upright(self, image: Image.Image) -> Image.Image:
        """The stored pixels turned upright."""
        method = _TRANSPOSE.get(self.value)
        return image if method is None else image.transpose(method)

    def upright_size(self, stored_size: tuple[int, int]) -> tuple[int, int]:
        width, height = stored_size
        return (height, width) if self.swaps_axes else (width, height)

    def stored_size(self, upright_size: tuple[int, int]) -> tuple[int, int]:
        return self.upright_size(upright_size)  # a transpose swaps the axes back

    def to_stored(self, points: np.ndarray, stored_size: tuple[int, int]) -> np.ndarray:
        """Map (N, 2) upright pixel coordinates (pixel i centred at i) to the stored pixels'."""
        x, y = np.asarray(points, dtype=np.float64).T
        last_x, last_y = stored_size[0] - 1, stored_size[1] - 1
        mapped = {
            1: (x, y),
            2: (last_x - x, y),
            3: (last_x - x, last_y - y),
            4: (x, last_y - y),
            5: (y, x),
            6: (y, last_y - x),
            7: (last_x - y, last_y - x),
            8: (last_x - y, x),
        }[self.value]
        return np.column_stack(mapped)


UPRIGHT = Orientation()  # stored as shown: nothing to turn


def orient_image(image: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag (all eight values) so the pixels are upright."""
    return Orientation.of(image).upright(image)
