"""YuNet (libfacedetection, Apache-2.0) from an ONNX file with dynamic input size.

Input [N, 3, H, W] float BGR in 0..255 with H and W multiples of 32. For each stride s the
outputs hold one row per grid cell, row-major: score = sqrt(cls * obj), centre = (cell + bbox[:2])
* s, size = exp(bbox[2:]) * s, landmark k = (cell + kps[2k:2k+2]) * s.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..detect import DetectorSettings, FaceDetector, nms

STRIDES = (8, 16, 32)


class YunetDetector(FaceDetector):
    name = "yunet"
    default_threshold = 0.6
    nms_threshold = 0.3

    def __init__(
        self, session: ort.InferenceSession, settings: DetectorSettings = DetectorSettings()
    ) -> None:
        super().__init__(settings)
        self.session = session
        self.input_name = session.get_inputs()[0].name
        names = [output.name for output in session.get_outputs()]
        self.output_names = [
            f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES
        ]
        missing = set(self.output_names) - set(names)
        if missing:
            raise ValueError(f"not a YuNet model: outputs {sorted(missing)} are missing")

    def _detect(
        self, rgb: np.ndarray, min_face_size: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        height, width = rgb.shape[:2]
        padded_h, padded_w = -(-height // 32) * 32, -(-width // 32) * 32
        blob = np.zeros((1, 3, padded_h, padded_w), dtype=np.float32)
        blob[0, :, :height, :width] = rgb[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR, CHW
        results = self.session.run(self.output_names, {self.input_name: blob})
        outputs = dict(zip(self.output_names, results, strict=True))

        all_boxes, all_scores, all_points = [], [], []
        for stride in STRIDES:
            rows, cols = padded_h // stride, padded_w // stride
            cells = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1).reshape(-1, 2)
            scores = np.sqrt(
                np.clip(outputs[f"cls_{stride}"][0, :, 0] * outputs[f"obj_{stride}"][0, :, 0], 0, 1)
            )
            hits = scores >= self.threshold
            if not hits.any():
                continue
            cells, bbox, kps = (
                cells[hits],
                outputs[f"bbox_{stride}"][0][hits],
                outputs[f"kps_{stride}"][0][hits],
            )
            centres = (cells + bbox[:, :2]) * stride
            half_sizes = np.exp(bbox[:, 2:]) * stride / 2
            all_boxes.append(np.hstack([centres - half_sizes, centres + half_sizes]))
            all_scores.append(scores[hits])
            all_points.append((cells[:, None, :] + kps.reshape(-1, 5, 2)) * stride)
        if not all_boxes:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        boxes, scores, points = (
            np.vstack(all_boxes),
            np.concatenate(all_scores),
            np.vstack(all_points),
        )
        keep = nms(boxes, scores, self.nms_threshold)
        return boxes[keep], scores[keep], points[keep]
