"""Preprocessing for toonification: decode and orient, detect faces, FFHQ-align, paste back.

Plain functions and small classes; no HTTP, no BentoML. One photo goes through::

    photo = read_photo(data)                    # upright 8-bit RGB PIL image
    faces = detector.detect(photo)              # list[Face], largest first
    aligned = align_face(photo, faces[0].landmarks, size=512)
    result = paste_back(photo, [aligned], [toon_crop])
"""

from .align import AlignedFace, align_face, ffhq_quad
from .decode import DecodeSettings, decode_image, orient_image, read_photo, to_rgb
from .detect import DetectorSettings, Face, FaceDetector, create_detector
from .errors import (
    CorruptImage,
    ImageTooLarge,
    InputError,
    NoFaceFound,
    NotAnImage,
    UnsupportedFormat,
)
from .paste import paste_back

__all__ = [
    "AlignedFace",
    "CorruptImage",
    "DecodeSettings",
    "DetectorSettings",
    "Face",
    "FaceDetector",
    "ImageTooLarge",
    "InputError",
    "NoFaceFound",
    "NotAnImage",
    "UnsupportedFormat",
    "align_face",
    "create_detector",
    "decode_image",
    "ffhq_quad",
    "orient_image",
    "paste_back",
    "read_photo",
    "to_rgb",
]
