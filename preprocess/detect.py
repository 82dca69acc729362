"""Face detection: one small interface, several backends.

A detector takes an upright RGB photo and returns faces, largest first, each with a box, a score
and 5 landmarks in photo pixels, in the order: image-left eye, image-right eye, nose, mouth-left,
mouth-right. Backends only see a downscaled copy; this module maps results back.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .orient import UPRIGHT, Orientation

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the photo's pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray = field(repr=False)  # (5, 2) float32 x, y
    mesh: np.ndarray | None = field(default=None, repr=False)  # (468, 3) where a mesh was read

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": np.round(self.landmarks.astype(np.float64), 1).tolist(),
        }


@dataclass(frozen=True)
class DetectorSettings:
    """What every backend honours. ``score_threshold=None`` keeps the backend's own default."""

    detect_size: int = 640  # long side of the downscaled copy the network sees
    score_threshold: float | None = None
    min_face_size: int = 32  # shorter box side, in photo pixels
    threads: int = 1  # ONNX Runtime intra-op threads per detector
    cache_dir: Path | None = None  # compiled models kept between starts (OpenVINO's)


def cpu_session(model: str | Path | bytes, threads: int) -> ort.InferenceSession:
    """A CPU session with an explicit thread count (ONNX Runtime would take every core)."""
    import onnxruntime as ort  # here: a worker on MediaPipe's detector never loads it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def fix_landmark_sides(landmarks: np.ndarray) -> np.ndarray:
    """Swap left/right when the detector mixed them up.

    With y pointing down, cross(eye_right - eye_left, mouth_avg - eye_avg) > 0 for a face whose
    eyes run left to right above its mouth; FFHQ alignment needs that orientation.
    """
    eye_left, eye_right, _, mouth_left, mouth_right = landmarks
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - (eye_left + eye_right) / 2
    if eye_to_eye[0] * eye_to_mouth[1] - eye_to_eye[1] * eye_to_mouth[0] >= 0:
        return landmarks
    return landmarks[[1, 0, 2, 4, 3]]


def downscale(image: Image.Image, long_side: int) -> tuple[Image.Image, float]:
    """A copy whose long side is at most ``long_side``, and the scale factor applied."""
    scale = min(1.0, long_side / max(image.size))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # A box filter after an integer reduce is plenty for a detector and 2.5x faster than
    # bilinear on a 3 MP photo.
    return image.resize(size, Image.Resampling.BOX, reducing_gap=1.0), scale


class FaceDetector(abc.ABC):
    """Base class: downscale, run the backend, map back, filter, order largest first."""

    name: str = "base"
    default_threshold: float = 0.5

    def __init__(self, settings: DetectorSettings = DetectorSettings()) -> None:
        self.settings = settings

    @property
    def threshold(self) -> float:
        if self.settings.score_threshold is None:
            return self.default_threshold
        return self.settings.score_threshold

    def detect(self, image: Image.Image, orientation: Orientation = UPRIGHT) -> list[Face]:
        """Faces in an RGB photo, largest first, in upright coordinates.

        ``orientation`` says how the stored pixels turn upright (an upright photo by default):
        only the small copy the backend sees is turned.
        """
        small, scale = downscale(image, self.settings.detect_size)
        small = orientation.upright(small)
        min_size_small = self.settings.min_face_size * scale
        boxes, scores, landmarks = self._detect(np.asarray(small), min_size_small)
        faces = []
        for box, score, points in zip(boxes, scores, landmarks, strict=True):
            box = box / scale
            face = Face(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                score=float(score),
                landmarks=fix_landmark_sides(points.astype(np.float32) / scale),
            )
            if min(face.width, face.height) >= self.settings.min_face_size:
                faces.append(face)
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces

    @abc.abstractmethod
    def _detect(
        self, rgb: np.ndarray, min_face_size: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Backend: HxWx3 uint8 RGB -> boxes (N,4) x1y1x2y2, scores (N,), landmarks (N,5,2)."""


def box_iou(a, b) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    ``mode="min"`` divides the overlap by the smaller box, which also drops boxes nested inside
    a better one (MTCNN's last stage).
    """
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[overlaps(boxes[best], boxes[rest], mode) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def overlaps(box: np.ndarray, boxes: np.ndarray, mode: str = "union") -> np.ndarray:
    """The intersection of ``box`` with each of ``boxes`` (N, 4), over their union, or with
    ``mode="min"`` over the smaller of the two."""
    top_left = np.maximum(box[0:2], boxes[:, 0:2])
    bottom_right = np.minimum(box[2:4], boxes[:, 2:4])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(np.clip(box[2:4] - box[0:2], 0, None))
    areas = np.prod(np.clip(boxes[:, 2:4] - boxes[:, 0:2], 0, None), axis=1)
    denominator = np.minimum(area, areas) if mode == "min" else area + areas - inter
    return inter / np.maximum(denominator, 1e-9)
