"""MediaPipe's face detector (BlazeFace) and Face Mesh (Apache-2.0), run on OpenVINO.

The ``.tflite`` files come out of the pinned ``mediapipe`` wheel and are stored as OpenVINO IR
(model_store/mediapipe.py: converted once, outputs checked equal). What MediaPipe's graphs
configure (face_detection*.pbtxt, face_landmark_cpu.pbtxt,
face_detection_front_detection_to_roi.pbtxt) is restated here:

- Detection: the photo letterboxed into a square, RGB scaled to [-1, 1]; SSD anchors with fixed
  size 1 (a centre per grid cell and anchor); per anchor 16 values: box centre and size, then
  six keypoints (the person's right eye, left eye, nose tip, mouth centre, right and left ear),
  each an offset from the anchor in input pixels; a score through a sigmoid; weighted
  non-maximum suppression at IoU 0.3.
- Landmarks: a square crop 1.5 times the box's long side, turned so the eyes lie level, at
  192x192 in [0, 1]; 468 points (x, y, z) in crop pixels, and a face-presence logit.

The full-range model (192 px, faces up to about 5 m) looks at the whole photo; where a face of
``min_face_size`` would be under ``SMALLEST_FACE`` input pixels there, it also looks at
overlapping tiles. The five points the aligner takes are the mesh's: each eye the mean of its
contour, the nose tip, the mouth corners (the FFHQ recipe's choice of points).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
from PIL import Image

from ..detect import (
    DetectorSettings,
    Face,
    FaceDetector,
    downscale,
    fix_landmark_sides,
    overlaps,
)
from ..orient import UPRIGHT, Orientation

# OpenVINO IR, each with its weights beside it (.bin)
SHORT_RANGE = "face_detection_short_range.xml"
FULL_RANGE = "face_detection_full_range_sparse.xml"
FACE_MESH = "face_landmark.xml"
FILES = (SHORT_RANGE, FULL_RANGE, FACE_MESH)  # stored; the short range is not loaded (below)
LOADED = (FULL_RANGE, FACE_MESH)
LICENCE = "Apache-2.0 (MediaPipe 0.10.21 face detection and Face Mesh models)"

# Mesh indices: the contour of each eye (the person's right eye is on the photo's left).
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398]
NOSE_TIP, MOUTH_RIGHT, MOUTH_LEFT = 1, 61, 291
MESH_SIZE = 192
ROI_SCALE = 1.5
SMALLEST_FACE = 14  # input pixels: below about this the full-range model misses harder faces
SLACK = 1.2  # a copy or strip up to this much over the model's side is shrunk into it, not tiled
SMALLEST_FRACTION = 0.05  # of the long side: the smallest face looked for (as MTCNN)
# A small or turned face can score under the detector's own threshold (0.6), and a galaxy or a
# logo over it: every candidate from CANDIDATE_SCORE is kept only if Face Mesh, looking at it
# closely, sees a face. Its presence score on the test photos: 0.999 and more for faces, 0.37 for
# the cameraman in profile behind his camera, 0.07 and less for the rest (galaxies, logos, chips).
CANDIDATE_SCORE = 0.3
FACE_PRESENCE = 0.2


@dataclass(frozen=True)
class DetectorModel:
    """One BlazeFace model: its input side and its anchor layout (SsdAnchorsCalculator)."""

    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per distinct stride, summed over its layers

    def anchors(self) -> np.ndarray:
        """(N, 2) anchor centres in [0, 1], in the order the model's outputs use."""
        centres = []
        for stride, per_cell in zip(self.strides, self.anchors_per_cell, strict=True):
            cells = self.size // stride
            grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
            x, y = np.meshgrid(grid, grid)
            cell = np.stack([x.ravel(), y.ravel()], axis=1)
            centres.append(np.repeat(cell, per_cell, axis=0))
        return np.concatenate(centres)


# Short range: four layers, strides 8, 16, 16, 16, two anchors each (aspect 1 and the
# interpolated scale); layers of one stride share a grid. Full range: one layer, one anchor.
SHORT = DetectorModel(SHORT_RANGE, 128, (8, 16), (2, 6))
FULL = DetectorModel(FULL_RANGE, 192, (4,), (1,))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def weighted_nms(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, threshold: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED suppression: each kept face is the score-weighted mean of the boxes
    and keypoints that overlap the best remaining one, with that one's score."""
    order = np.argsort(-scores, kind="stable")
    kept_boxes, kept_points, kept_scores = [], [], []
    while order.size:
        overlap = overlaps(boxes[order[0]], boxes[order])
        group, order = order[overlap > threshold], order[overlap <= threshold]
        weights = scores[group] / scores[group].sum()
        kept_boxes.append(weights @ boxes[group])
        kept_points.append(np.tensordot(weights, points[group], axes=1))
        kept_scores.append(scores[group[0]])
    if not kept_scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0)
    return np.asarray(kept_boxes), np.asarray(kept_points), np.asarray(kept_scores)


def with_pixel_input(model: ov.Model, file: str) -> ov.Model:
    """The model taking RGB bytes: the scaling MediaPipe does before it ([-1, 1] for the
    detectors, [0, 1] for the mesh) becomes the model's first step, run by OpenVINO."""
    steps = ov.preprocess.PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8)
    pixels = steps.input().preprocess().convert_element_type(ov.Type.f32)
    if file == FACE_MESH:
        pixels.scale(255.0)
    else:
        pixels.mean(127.5).scale(127.5)
    return steps.build()


def spans(length: int, tile: int) -> list[int]:
    """Starts of tiles covering ``length``, evenly spaced, overlapping by at least a third (a
    face cut by one tile's edge is whole in the next); one where ``length`` is within SLACK."""
    if length <= tile * SLACK:
        return [0]
    count = math.ceil((length - tile) / (tile * 2 // 3)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def turned_square(centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """The 2x3 affine map from a side x side crop's pixels to the photo, turned by ``angle``."""
    cos, sin = math.cos(angle), math.sin(angle)
    scale = side / MESH_SIZE
    origin = centre - scale * (MESH_SIZE / 2) * np.array([cos - sin, sin + cos])
    return np.array([[scale * cos, -scale * sin, origin[0]], [scale * sin, scale * cos, origin[1]]])


class MediapipeDetector(FaceDetector):
    name = "mediapipe"
    default_threshold = CANDIDATE_SCORE

    def __init__(self, folder: str | Path, settings: DetectorSettings = DetectorSettings()) -> None:
        super().__init__(settings)
        self.folder = folder = Path(folder)
        core = ov.Core()
        if settings.cache_dir is not None:  # compiled once, loaded at later starts (half the time)
            core.set_property({"CACHE_DIR": str(settings.cache_dir / "openvino")})
        # Not pinned: OpenVINO binds the thread that runs an inference to a core of its own
        # choosing (the first), and every thread of a worker detecting at once would share it.
        config = {
            "INFERENCE_NUM_THREADS": settings.threads,
            "NUM_STREAMS": 1,
            "ENABLE_CPU_PINNING": False,
        }
        compiled = {}
        for file in LOADED:
            path = folder / file
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: python -m model_store build-defaults")
            try:
                model = with_pixel_input(core.read_model(path), file)
                compiled[file] = core.compile_model(model, "CPU", config)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[-1]
                raise ValueError(
                    f"{path} does not load ({reason}): python -m model_store build-defaults"
                ) from None
        self.compiled = compiled
        self.anchors = FULL.anchors() * FULL.size  # in input pixels
        # The preprocessing worker detects in several threads at once, and an infer request
        # holds its input and output buffers: each thread gets requests of its own.
        self.requests = threading.local()
        # One inference of each model here, in the thread that loads them. OpenVINO's Python
        # binding initialises a static on the first inference in a process, running Python
        # while it does; two worker threads making their first at once deadlocked (one holding
        # the GIL and waiting for the static, the other holding the static and waiting for the
        # GIL), and the worker never answered again.
        for file, model in compiled.items():
            port = model.input(0)
            blank = np.zeros(port.get_shape(), port.get_element_type().to_dtype())
            self.request(file).infer({0: blank}, share_inputs=True).values()

    def request(self, file: str) -> ov.InferRequest:
        """This thread's infer request for the model in ``file``."""
        mine = self.requests.__dict__
        if file not in mine:
            mine[file] = self.compiled[file].create_infer_request()
        return mine[file]

    # -- detection ------------------------------------------------------------------------------

    def detect(self, image: Image.Image, orientation: Orientation = UPRIGHT) -> list[Face]:
        """Faces in the stored pixels, in upright coordinates, largest first: found in a small
        upright copy, their landmarks read from the stored pixels at full resolution."""
        long_side = max(image.size)
        # As MTCNN: faces under a twentieth of the long side are not looked for (too small for a
        # 512 px cartoon), whatever min_face_size allows. The copy is as small as lets the
        # smallest face looked for come out SMALLEST_FACE pixels wide.
        smallest = max(self.settings.min_face_size, SMALLEST_FRACTION * long_side)
        wanted = round(long_side * SMALLEST_FACE / smallest)
        small, scale = downscale(image, FULL.size if wanted <= FULL.size * SLACK else wanted)
        small = np.asarray(orientation.upright(small))
        found = list(self._windows(small))
        boxes, points, scores = weighted_nms(*(np.concatenate(p) for p in zip(*found, strict=True)))
        faces = []
        for box, keypoints, score in zip(boxes / scale, points / scale, scores, strict=True):
            mesh, presence = self.face_mesh(image, orientation, box, keypoints)
            face = Face(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                score=float(score),
                landmarks=fix_landmark_sides(five_points(mesh).astype(np.float32)),
                mesh=mesh.astype(np.float32),
            )
            if presence >= FACE_PRESENCE and min(face.width, face.height) >= (
                self.settings.min_face_size
            ):
                faces.append(face)
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces

    def _detect(self, rgb: np.ndarray, min_face_size: float):
        raise NotImplementedError("MediapipeDetector.detect reads the stored pixels itself")

    def _windows(self, small: np.ndarray):
        """Detections in the whole copy (the largest faces), and in overlapping tiles of the
        model's size where the copy is larger than that. (The short-range model on the whole
        copy would cost a third, but its boxes are drawn differently: a face found by both
        would not merge.)"""
        full_height, full_width = small.shape[:2]
        yield self._detect_in(small, (0, 0, full_width, full_height))
        if max(full_width, full_height) <= FULL.size * SLACK:
            return
        columns, rows = spans(full_width, FULL.size), spans(full_height, FULL.size)
        width = FULL.size if len(columns) > 1 else full_width
        height = FULL.size if len(rows) > 1 else full_height
        for top in rows:
            for left in columns:
                yield self._detect_in(small, (left, top, left + width, top + height))

    def _detect_in(self, image: np.ndarray, window: tuple[int, int, int, int]):
        """Boxes (N, 4), keypoints (N, 6, 2) and scores (N,) in photo pixels, from one window
        letterboxed into the full-range model's square."""
        model = FULL
        left, top, right, bottom = window
        side = max(right - left, bottom - top)
        scale = model.size / side
        crop = image[top:bottom, left:right]
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        if size != (crop.shape[1], crop.shape[0]):
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        tensor = np.zeros((1, model.size, model.size, 3), np.uint8)  # black borders, as MediaPipe
        offset_x, offset_y = (model.size - size[0]) // 2, (model.size - size[1]) // 2
        tensor[0, offset_y : offset_y + size[1], offset_x : offset_x + size[0]] = crop
        regressors, logits = self.request(FULL_RANGE).infer({0: tensor}, share_inputs=True).values()
        scores = sigmoid(logits[0, :, 0])
        hits = scores >= self.threshold
        raw, anchors = regressors[0][hits], self.anchors[hits]
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        shift = np.array([left - offset_x / scale, top - offset_y / scale])
        boxes = boxes / scale + np.tile(shift, 2)
        keypoints = keypoints / scale + shift
        return boxes, keypoints, scores[hits]

    # -- landmarks ------------------------------------------------------------------------------

    def face_mesh(
        self,
        stored: Image.Image,
        orientation: Orientation,
        box: np.ndarray,
        keypoints: np.ndarray,
    ) -> tuple[np.ndarray, float]:
        """468 points (x, y, z) in upright photo pixels and the presence score, from the
        turned square around a detection, sampled from the stored pixels."""
        right_eye, left_eye = keypoints[0], keypoints[1]
        angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
        centre = (box[:2] + box[2:4]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * ROI_SCALE
        to_photo = turned_square(centre, side, angle)
        crop = sample(stored, then(upright_to_stored(orientation, stored.size), to_photo))
        points, presence = (
            self.request(FACE_MESH).infer({0: crop[None]}, share_inputs=True).values()
        )
        mesh = points.reshape(468, 3).astype(np.float64)
        xy = mesh[:, :2] @ to_photo[:, :2].T + to_photo[:, 2]
        z = mesh[:, 2:] * side / MESH_SIZE
        return np.concatenate([xy, z], axis=1), float(sigmoid(presence.ravel())[0])


def upright_to_stored(orientation: Orientation, stored_size: tuple[int, int]) -> np.ndarray:
    """The orientation's map from upright to stored pixels, as a 2x3 affine in Pillow's
    convention (pixel i spans [i, i + 1]; ``to_stored`` centres it at i)."""
    corners = np.array([[0, 0], [1, 0], [0, 1]]) - 0.5
    origin, x, y = orientation.to_stored(corners, stored_size) + 0.5
    return np.column_stack([x - origin, y - origin, origin])


def then(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``outer`` after ``inner``."""
    return np.column_stack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2] + outer[:, 2]])


def sample(stored: Image.Image, to_stored: np.ndarray) -> np.ndarray:
    """The MESH_SIZE square (RGB, uint8) whose pixels ``to_stored`` maps into the stored photo,
    edges repeated as MediaPipe does. Only the region under it is read; a large face is first
    reduced by a whole factor (bilinear sampling alone would alias it)."""
    corners = np.array([[0, 0, 1], [MESH_SIZE, 0, 1], [0, MESH_SIZE, 1], [MESH_SIZE] * 2 + [1]])
    spread = corners @ to_stored.T
    factor = max(1, int(float(np.hypot(*to_stored[:, 0])) // 1.5))  # stored px per crop px
    left, top = (np.floor(np.clip(spread.min(axis=0), 0, None) / factor) * factor).astype(int)
    right = min(stored.width, int(np.ceil(spread[:, 0].max())) + factor)
    bottom = min(stored.height, int(np.ceil(spread[:, 1].max())) + factor)
    left, top = min(left, stored.width - 1), min(top, stored.height - 1)
    region = stored.crop((left, top, max(right, left + 1), max(bottom, top + 1)))
    if factor > 1:
        region = region.reduce(factor)
    shift = np.array([[1 / factor, 0, -left / factor], [0, 1 / factor, -top / factor]])
    crop_to_region = then(shift, to_stored)
    # OpenCV centres pixel i at i, Pillow's affine maps above span [i, i + 1].
    crop_to_region[:, 2] += crop_to_region[:, :2] @ [0.5, 0.5] - 0.5
    return cv2.warpAffine(
        np.asarray(region),
        crop_to_region,
        (MESH_SIZE, MESH_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def five_points(mesh: np.ndarray) -> np.ndarray:
    """The aligner's five points from the mesh, photo-left eye first: each eye the mean of its
    contour, the nose tip, the mouth corners."""
    return np.array(
        [
            mesh[RIGHT_EYE, :2].mean(axis=0),
            mesh[LEFT_EYE, :2].mean(axis=0),
            mesh[NOSE_TIP, :2],
            mesh[MOUTH_RIGHT, :2],
            mesh[MOUTH_LEFT, :2],
        ]
    )
