"""FFHQ alignment: the exact quad of the FFHQ reference (recreate_aligned_images).

Not a least-squares template fit.

Toon generators are trained on FFHQ crops, so the crop must match FFHQ's: the quad comes from the
eye centres and the mouth midpoint, then the picture is shrunk, cropped, reflect-padded with a
blur where the quad leaves the photo, and sampled bilinearly over the quad (the reference's QUAD
transform) at up to ``supersample`` times the output size before a Lanczos downscale.

Coordinates: photo pixel indices (pixel i has its centre at i), as detectors report them. The
reference adds 0.5 when handing the quad to Pillow, whose pixel i spans [i, i + 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageFilter

from .orient import UPRIGHT, Orientation


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An aligned crop and the quad it was cut from.

    ``quad`` holds the crop's corners top-left, bottom-left, bottom-right, top-right in photo
    pixel coordinates; crop point (u, v) in [0, size] maps to
    ``quad[0] + (quad[3] - quad[0]) * u / size + (quad[1] - quad[0]) * v / size`` (a similarity),
    which is what paste-back inverts.
    """

    image: Image.Image = field(repr=False)  # size x size, RGB
    quad: np.ndarray  # (4, 2) float64

    @property
    def size(self) -> int:
        return self.image.width

    def photo_to_crop(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) photo pixel coordinates into the crop's (u, v) coordinates."""
        frame = np.column_stack([self.quad[3] - self.quad[0], self.quad[1] - self.quad[0]])
        offsets = np.asarray(points, dtype=np.float64) - self.quad[0]
        return np.linalg.solve(frame, offsets.T).T * self.size


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad (TL, BL, BR, TR) from 5 landmarks; the nose is not used."""
    points = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right, mouth_left, mouth_right = points[0], points[1], points[3], points[4]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align_face(
    photo: Image.Image,
    landmarks: np.ndarray,
    size: int = 512,
    supersample: int = 2,
    orientation: Orientation = UPRIGHT,
) -> AlignedFace:
    """Cut the FFHQ-aligned ``size`` x ``size`` crop of one face out of an RGB photo.

    ``landmarks`` are upright coordinates; ``orientation`` says how the stored ``photo`` turns
    upright (already upright by default). The quad is mapped onto the stored pixels and the crop
    sampled from them, so the photo itself is never turned.
    """
    original_quad = ffhq_quad(landmarks)
    quad = orientation.to_stored(original_quad, photo.size)
    qsize = np.hypot(*(quad[3] - quad[0]))
    image = photo

    # Shrink: a face far larger than the output is first downscaled with a good filter.
    shrink = int(np.floor(qsize / size * 0.5))
    width, height = image.size
    if shrink > 1:
        width, height = int(np.rint(image.width / shrink)), int(np.rint(image.height / shrink))
        quad /= shrink
        qsize /= shrink

    # Crop to the quad's box plus a border. With a shrink, only that box of the shrunk photo is
    # made: Pillow resizes the matching region of the photo to it (the same pixels as shrinking
    # it all and cropping, without resampling the rest of a 12 MP photo).
    border = max(int(np.rint(qsize * 0.1)), 3)
    box = _bounds(quad)
    box = (
        max(box[0] - border, 0),
        max(box[1] - border, 0),
        min(box[2] + border, width),
        min(box[3] + border, height),
    )
    if shrink > 1:
        fx, fy = image.width / width, image.height / height
        region = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
        image = image.resize(
            (box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS, box=region
        )
        quad -= box[0:2]
    elif box[2] - box[0] < image.width or box[3] - box[1] < image.height:
        image = image.crop(box)
        quad -= box[0:2]

    # Pad where the quad leaves the photo: reflect, blur, fade to the median colour.
    outside = _bounds(quad)
    pad = (
        max(-outside[0] + border, 0),
        max(-outside[1] + border, 0),
        max(outside[2] - image.width + border, 0),
        max(outside[3] - image.height + border, 0),
    )
    if max(pad) > border - 4:
        # The reference pads all four sides by at least 0.3 x qsize; only the sides the quad
        # leaves are padded here: the others would only ever be sampled outside the quad.
        pad = np.where(np.asarray(pad) > 0, np.maximum(pad, int(np.rint(qsize * 0.3))), 0)
        image = _reflect_pad_blurred(image, pad, qsize)
        quad += pad[:2]

    # Supersample up to ``supersample`` times, but never beyond the quad's own resolution:
    # sampling a 500 px face at 1024 only to shrink it back adds time and no detail.
    transform_size = int(np.clip(np.ceil(qsize), size, size * supersample))
    image = _sample_quad(image, quad, transform_size)
    if transform_size != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return AlignedFace(image=image, quad=original_quad)


def _sample_quad(image: Image.Image, quad: np.ndarray, size: int) -> Image.Image:
    """Bilinear samples of the square quad (TL, BL, BR, TR) as a ``size`` x ``size`` image.

    The reference's Pillow QUAD transform, done as the affine map it is (an FFHQ quad is a
    square) with OpenCV: 5x faster, within one grey level of Pillow's. Output pixel (u, v) has
    its centre at (u + 0.5, v + 0.5) in Pillow's convention, photo pixel i at i here.
    """
    corner, right, down = quad[0], (quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size
    offset = corner + (right + down) * 0.5  # the first output pixel's centre, in photo pixels
    matrix = np.column_stack([right, down, offset])
    pixels = cv2.warpAffine(
        np.asarray(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return Image.fromarray(pixels)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (
        int(np.floor(quad[:, 0].min())),
        int(np.floor(quad[:, 1].min())),
        int(np.ceil(quad[:, 0].max())),
        int(np.ceil(quad[:, 1].max())),
    )


def _reflect_pad_blurred(image: Image.Image, pad: np.ndarray, qsize: float) -> Image.Image:
    """The reference's padding: reflect, blur toward the far edge, fade to the median colour.

    Done with Pillow on 8-bit pixels (composites through masks, the blur computed at a quarter
    resolution): the padding is filler that the generator sees blurred, and this takes a tenth of
    the reference's float pipeline.
    """
    left, top, right, bottom = (int(v) for v in pad)
    padded = np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), "reflect")
    height, width, _ = padded.shape
    median = tuple(int(v) for v in np.median(padded[::4, ::4].reshape(-1, 3), axis=0))
    result = Image.fromarray(padded)
    del padded  # a padded 12 MP face region is tens of MB: one copy at a time

    # The weight is 0 at the original edge, rising to 1 at the far edge of the padding (negative
    # inside, and on sides without padding), the larger of a column's and a row's. The masks are
    # monotone in it, so each is made from its column and row ramps alone: one byte per pixel,
    # no full-size float arrays.
    def ramp(distance: np.ndarray, padding: int) -> np.ndarray:
        return np.float32(distance) / padding if padding else np.full_like(distance, np.inf, "f4")

    x, y = np.arange(width), np.arange(height)
    columns = 1.0 - np.minimum(ramp(x, left), ramp(width - 1 - x, right))
    rows = 1.0 - np.minimum(ramp(y, top), ramp(height - 1 - y, bottom))

    def mask(scale: float, offset: float) -> Image.Image:
        weights = np.maximum(
            _mask_bytes(columns * scale + offset)[None, :],
            _mask_bytes(rows * scale + offset)[:, None],
        )
        return Image.fromarray(weights, "L")

    blurred = (
        result.reduce(4)
        .filter(ImageFilter.GaussianBlur(float(qsize) * 0.02 / 4))
        .resize(result.size, Image.Resampling.BILINEAR)
    )
    result.paste(blurred, mask=mask(3.0, 1.0))
    del blurred
    result.paste(median, mask=mask(1.0, 0.0))
    return result


def _mask_bytes(weights: np.ndarray) -> np.ndarray:
    return np.uint8(np.clip(weights, 0.0, 1.0) * 255 + 0.5)
