"""The preprocessing stage as one call: bytes in, aligned crops with their quads out, timed.

The decoded photo is kept with the crops, so pasting the toons back needs no second decode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .align import AlignedFace, align_face
from .decode import DecodeSettings, decode_image, to_rgb
from .detect import Face, FaceDetector
from .errors import NoFaceFound
from .features import TEMPLATE, face_features
from .orient import Orientation


@dataclass(eq=False)
class PreparedPhoto:
    stored: Image.Image | None  # 8-bit RGB as decoded, before the EXIF orientation; None once taken
    orientation: Orientation
    num_faces: int  # faces detected, before selection
    faces: list[Face]  # in upright coordinates, as are the quads
    aligned: list[AlignedFace]
    features: np.ndarray  # (N, 5, 8) float32: where each crop's features are (features.py)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    size: tuple[int, int] = field(init=False)  # the upright photo's width and height

    def __post_init__(self) -> None:
        assert self.stored is not None
        self.size = self.orientation.upright_size(self.stored.size)

    def take_upright(self, size: tuple[int, int] | None = None) -> Image.Image:
        """The upright photo, scaled to ``size`` (upright) first: fewer pixels to turn.

        The photo lets go of its stored pixels (it can be taken once), so they are freed as soon
        as the upright copy exists: a 12 MP photo is 48 MB in Pillow, and the answer is pasted
        into what this returns.
        """
        stored, self.stored = self.stored, None
        if stored is None:
            raise RuntimeError("the photo's pixels were taken already")
        if size is not None and size != self.size:
            target = self.orientation.stored_size(size)
            stored = stored.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        return self.orientation.upright(stored)


def select_faces(
    faces: list[Face], face_index: int | None, all_faces: bool, max_faces: int
) -> list[Face]:
    """The faces to toonify: all (up to max_faces), one by index, or the largest."""
    if not faces:
        raise NoFaceFound(
            "No face was found. Send a photo with a clearly visible face, "
            "at least a few percent of the picture's width.",
            num_faces=0,
        )
    if all_faces:
        return faces[:max_faces]
    index = face_index or 0
    if index >= len(faces):
        raise NoFaceFound(
            f"face_index {index} asked for, but only {len(faces)} face(s) found "
            f"(indices 0 to {len(faces) - 1}, largest first).",
            num_faces=len(faces),
        )
    return [faces[index]]


def prepare_photo(
    data: bytes,
    detector: FaceDetector,
    *,
    decode: DecodeSettings = DecodeSettings(),
    face_index: int | None = None,
    all_faces: bool = False,
    max_faces: int = 8,
    crop_size: int = 512,
    supersample: int = 2,
) -> PreparedPhoto:
    """Decode, orient, detect, select and align; raises an InputError for bad uploads."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    image = decode_image(data, decode)
    lap("decode")
    # The stored pixels are never turned upright here: the detector turns its small copy, the
    # alignment samples the stored pixels through the orientation (docs/performance.md).
    orientation = Orientation.of(image)
    stored = to_rgb(image, decode.background)
    lap("orient")
    faces = detector.detect(stored, orientation)
    lap("detect")
    chosen = select_faces(faces, face_index, all_faces, max_faces)
    aligned = [
        align_face(stored, face.landmarks, crop_size, supersample, orientation) for face in chosen
    ]
    features = np.stack(
        [crop_features(face, crop) for face, crop in zip(chosen, aligned, strict=True)]
    )
    lap("align")
    return PreparedPhoto(stored, orientation, len(faces), chosen, aligned, features, timings)


def crop_features(face: Face, aligned: AlignedFace) -> np.ndarray:
    """Where the face's features are in its crop: from its mesh, or FFHQ's frontal template."""
    if face.mesh is None:
        return TEMPLATE
    return face_features(face.mesh, aligned.photo_to_crop, aligned.size)
