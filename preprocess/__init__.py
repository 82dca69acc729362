"""Preprocessing for toonification: decode and orient, detect faces, FFHQ-align, paste back.

Plain functions and small classes; no HTTP, no BentoML. One photo goes through::

    photo = read_photo(data)                    # upright 8-bit RGB PIL image
    faces = detector.detect(photo)              # list[Face], largest first
    aligned = align_face(photo, faces[0].landmarks, size=512)
    result = paste_back(photo, [aligned], [toon_crop])

The errors are imported at once; everything else when first used, so a process that only needs
the errors (the service's entry worker) never loads Pillow, OpenCV or ONNX Runtime.
"""

import lazy_loader

from .errors import (
    CorruptImage,
    ImageTooLarge,
    InputError,
    NoFaceFound,
    NotAnImage,
    UnsupportedFormat,
)

__getattr__, __dir__, _lazy_all = lazy_loader.attach(
    __name__,
    submod_attrs={
        "align": ["AlignedFace", "align_face", "ffhq_quad"],
        "decode": [
            "DecodeSettings",
            "check_upload_size",
            "decode_image",
            "decoded_size",
            "read_photo",
            "to_rgb",
        ],
        "detect": ["DetectorSettings", "Face", "FaceDetector"],
        "detectors": ["create_detector"],
        "orient": ["Orientation", "orient_image"],
        "paste": ["paste_back"],
    },
)

__all__ = [
    "CorruptImage",
    "ImageTooLarge",
    "InputError",
    "NoFaceFound",
    "NotAnImage",
    "UnsupportedFormat",
    *_lazy_all,
]
