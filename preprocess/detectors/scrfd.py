"""SCRFD through insightface's own decoder, from any SCRFD ONNX file or a model pack by name.

insightface's pretrained SCRFD weights are licensed for non-commercial research only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..detect import DetectorSettings, FaceDetector, cpu_session

logger = logging.getLogger(__name__)


def pack_detector_path(pack: str, root: str = "~/.insightface") -> Path:
    """The det_*.onnx of an insightface model pack (e.g. buffalo_l), downloaded when absent."""
    from insightface.utils import storage

    folder = Path(storage.ensure_available("models", pack, root=root))
    found = sorted(folder.glob("det_*.onnx"))
    if not found:
        raise FileNotFoundError(f"model pack {pack!r} in {folder} has no det_*.onnx detector")
    return found[0]


class ScrfdDetector(FaceDetector):
    name = "scrfd"
    default_threshold = 0.5

    def __init__(self, model, settings: DetectorSettings = DetectorSettings()) -> None:
        super().__init__(settings)
        self.model = model  # an insightface.model_zoo.SCRFD, prepared below
        size = settings.detect_size
        self.model.prepare(ctx_id=-1, input_size=(size, size), det_thresh=self.threshold)

    @classmethod
    def from_spec(cls, spec: str, settings: DetectorSettings = DetectorSettings()) -> ScrfdDetector:
        """``spec`` is a path to an SCRFD ONNX file or the name of an insightface model pack."""
        from insightface.model_zoo.scrfd import SCRFD

        path = Path(spec).expanduser()
        if not path.is_file():
            if spec.endswith(".onnx") or "/" in spec:
                raise FileNotFoundError(f"SCRFD model file not found: {spec}")
            path = pack_detector_path(spec)
        return cls(SCRFD(str(path), session=cpu_session(path, settings.threads)), settings)

    def _detect(
        self, rgb: np.ndarray, min_face_size: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        detections, landmarks = self.model.detect(bgr)
        if landmarks is None:
            raise ValueError("this SCRFD model predicts no landmarks; use a *_kps model")
        return detections[:, :4], detections[:, 4], landmarks
