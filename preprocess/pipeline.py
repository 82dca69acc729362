"""The preprocessing stage as one call: bytes in, aligned crops with their quads out, timed.

The decoded photo is kept with the crops, so pasting the toons back needs no second decode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from PIL import Image

from .align import AlignedFace, align_face
from .decode import DecodeSettings, decode_image, orient_image, to_rgb
from .detect import Face, FaceDetector
from .errors import NoFaceFound


@dataclass(frozen=True, eq=False)
class PreparedPhoto:
    photo: Image.Image  # upright 8-bit RGB; the quads refer to its pixels
    num_faces: int  # faces detected, before selection
    faces: list[Face]
    aligned: list[AlignedFace]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


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
    photo = to_rgb(orient_image(image), decode.background)
    lap("orient")
    faces = detector.detect(photo)
    lap("detect")
    chosen = select_faces(faces, face_index, all_faces, max_faces)
    aligned = [align_face(photo, face.landmarks, crop_size, supersample) for face in chosen]
    lap("align")
    return PreparedPhoto(photo, len(faces), chosen, aligned, timings)
