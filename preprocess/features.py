"""Where each face's features sit in its aligned crop: the generator's optional second input.

FFHQ alignment fixes the eyes' midpoint and the eye-to-mouth line, not the features themselves:
a closed eye, a face turned three-quarters or a laughing mouth lie elsewhere than a frontal
face's. A generator that takes a ``features`` input (the offline default does) gets, per crop,
one row per region in the 512-pixel frame of the crop, whatever the crop's own size:

====== ====================================================================================
column meaning
====== ====================================================================================
0, 1   centre x, y
2, 3   half-axes of the region's ellipse, along and across its angle
4      angle of its long axis, radians, clockwise from the x axis (the frame's y points down)
5      scale: inside the ellipse the region is scaled by this (eyes > 1 when open and seen);
       the jaw's horizontal scale towards its centre line
6      line: how strongly to draw a closed eye's lid as one line (eyes only)
7      paint: how strongly to paint the region (an open eye's catch-light; the lips' colour)
====== ====================================================================================

Faces with Face Mesh landmarks get their own rows (``face_features``); others (MTCNN's five
points) get ``TEMPLATE``, where an FFHQ-aligned frontal face has them, and nothing painted:
without a mesh nobody knows where an eye's iris or a lip really is.
"""

from __future__ import annotations

import numpy as np

FEATURES_INPUT = "features"  # the generator input's name
FRAME = 512.0
ROWS = ("left eye", "right eye", "nose", "mouth", "jaw")  # left and right as seen in the photo
COLUMNS = 8

# Face Mesh indices. The person's right eye is on the photo's left.
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]
# (outer corner, inner corner, upper lid points, the lower lid points facing them)
RIGHT_EYE_LIDS = (33, 133, [160, 159, 158], [144, 145, 153])
LEFT_EYE_LIDS = (263, 362, [387, 386, 385], [373, 374, 380])
NOSE_TIP, NOSE_TOP_OF_TIP, NOSE_WINGS = 1, 4, (98, 327)
MOUTH_RIGHT, MOUTH_LEFT, UPPER_LIP_TOP, LOWER_LIP_BOTTOM = 61, 291, 0, 17
CHIN, JAW_SIDES = 152, (172, 397)

# How the offline default wants each region changed.
EYE_SCALE = 1.35  # an open eye that faces the camera
NOSE_SCALE, MOUTH_SCALE = 0.85, 0.88
JAW_SCALE = 0.94  # the jaw and lower cheeks move 6% of their distance towards the centre line
# Openness (lid gap over eye width) below CLOSED reads as a closed eye, above OPEN as open.
CLOSED, OPEN = 0.17, 0.25
# A head turned further than HIDDEN_FROM degrees hides its far eye behind the nose, fully at
# HIDDEN_AT: that eye is neither enlarged nor drawn.
HIDDEN_FROM, HIDDEN_AT = 20.0, 35.0

TEMPLATE = np.array(
    [
        # Where FFHQ alignment puts a frontal face's features: the mean of MTCNN's landmarks on
        # aligned real faces (eyes (194, 243) and (318, 243), mouth corners at y = 371).
        [194.0, 243.0, 34.0, 28.0, 0.0, EYE_SCALE, 0.0, 0.0],
        [318.0, 243.0, 34.0, 28.0, 0.0, EYE_SCALE, 0.0, 0.0],
        [256.0, 305.0, 22.0, 22.0, 0.0, NOSE_SCALE, 0.0, 0.0],
        [256.0, 372.0, 50.0, 24.0, 0.0, MOUTH_SCALE, 0.0, 0.0],
        # The jaw: centre line x, middle of the band of rows, reach from the centre line, half
        # the band's height.
        [256.0, 430.0, 210.0, 70.0, 0.0, JAW_SCALE, 0.0, 0.0],
    ],
    dtype=np.float32,
)


def _smoothstep(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def _angle(start: np.ndarray, end: np.ndarray) -> float:
    return float(np.arctan2(end[1] - start[1], end[0] - start[0]))


def head_yaw(mesh: np.ndarray) -> float:
    """Degrees the head is turned (sign: which way), from the depth of the outer eye corners."""
    corners = mesh[LEFT_EYE_LIDS[0]] - mesh[RIGHT_EYE_LIDS[0]]
    return float(np.degrees(np.arctan2(corners[2], np.hypot(corners[0], corners[1]))))


def _eye(points: np.ndarray, contour: list[int], lids: tuple, seen: float) -> list[float]:
    outer, inner, upper, lower = lids
    width = float(np.linalg.norm(points[inner] - points[outer]))
    gap = float(np.mean(np.linalg.norm(points[upper] - points[lower], axis=1)))
    opened = _smoothstep((gap / max(width, 1e-6) - CLOSED) / (OPEN - CLOSED))
    centre = points[contour].mean(axis=0)
    angle = _angle(points[outer], points[inner])
    if angle > np.pi / 2 or angle < -np.pi / 2:  # the same axis, pointing right
        angle = _angle(points[inner], points[outer])
    scale = 1.0 + (EYE_SCALE - 1.0) * opened * seen
    line, light = (1.0 - opened) * seen, opened * seen
    return [*centre, 0.62 * width, 0.51 * width, angle, scale, line, light]


def face_features(mesh: np.ndarray, to_crop, crop_size: int) -> np.ndarray:
    """The (5, 8) rows for one face from its Face Mesh (468, 3) in photo coordinates;
    ``to_crop`` maps (N, 2) photo points into the crop (``AlignedFace.photo_to_crop``)."""
    points = to_crop(mesh[:, :2]) * (FRAME / crop_size)
    yaw = head_yaw(mesh)
    far = _smoothstep((abs(yaw) - HIDDEN_FROM) / (HIDDEN_AT - HIDDEN_FROM))
    # Turned with a negative yaw, the person's right eye (the photo's left) is the far one.
    right_seen, left_seen = (1.0 - far, 1.0) if yaw < 0 else (1.0, 1.0 - far)
    nose_width = float(np.linalg.norm(points[NOSE_WINGS[0]] - points[NOSE_WINGS[1]]))
    corners = points[[MOUTH_RIGHT, MOUTH_LEFT]]
    mouth_width = float(np.linalg.norm(corners[1] - corners[0]))
    lips = points[[MOUTH_RIGHT, MOUTH_LEFT, UPPER_LIP_TOP, LOWER_LIP_BOTTOM]].mean(axis=0)
    lip_height = float(np.linalg.norm(points[UPPER_LIP_TOP] - points[LOWER_LIP_BOTTOM]))
    chin = points[CHIN]
    jaw_width = float(np.linalg.norm(points[JAW_SIDES[0]] - points[JAW_SIDES[1]]))
    rows = [
        _eye(points, RIGHT_EYE, RIGHT_EYE_LIDS, right_seen),
        _eye(points, LEFT_EYE, LEFT_EYE_LIDS, left_seen),
        [*points[NOSE_TOP_OF_TIP], 0.3 * nose_width, 0.3 * nose_width, 0.0, NOSE_SCALE, 0, 0],
        [
            *lips,
            0.4 * mouth_width,
            max(0.6 * lip_height, 0.45 * 0.4 * mouth_width),
            _angle(corners[0], corners[1]),
            MOUTH_SCALE,
            0.0,
            1.0,
        ],
        [
            chin[0],
            (lips[1] + chin[1]) / 2 + 10.0,
            0.95 * jaw_width,
            (chin[1] - lips[1]) / 2 + 20.0,
            0.0,
            JAW_SCALE,
            0.0,
            0.0,
        ],
    ]
    return np.asarray(rows, dtype=np.float32)


def template_features(count: int) -> np.ndarray:
    """``TEMPLATE`` for ``count`` crops: (count, 5, 8)."""
    return np.repeat(TEMPLATE[None], count, axis=0)
