"""The detector registry: a spec string names a backend and where its weights are.

The base class lives in ``preprocess.detect``; each backend imports it, and only this module
imports the backends, so there is no import cycle. A backend is imported when it is created:
a worker on MediaPipe's detector loads OpenVINO and not ONNX Runtime, one on MTCNN the reverse.
"""

from __future__ import annotations

from ..detect import DetectorSettings, FaceDetector, cpu_session

DETECTOR_NAMES = ("mediapipe", "mtcnn", "scrfd", "yunet")


def create_detector(spec: str, settings: DetectorSettings = DetectorSettings()) -> FaceDetector:
    """A detector from a spec: ``mediapipe:DIR``, ``mtcnn``, ``mtcnn:DIR``, ``scrfd:PATH|PACK``,
    ``yunet:PATH``."""
    name, _, location = spec.partition(":")
    if name == "mediapipe":
        if not location:
            raise ValueError("mediapipe needs its folder: mediapipe:/path (the model store's)")
        from .mediapipe import MediapipeDetector

        return MediapipeDetector(location, settings)
    if name == "mtcnn":
        from .mtcnn import MtcnnDetector

        return MtcnnDetector.from_dir(location or None, settings)
    if name == "scrfd":
        if not location:
            raise ValueError("scrfd needs a model: scrfd:/path/to/scrfd.onnx or scrfd:buffalo_l")
        from .scrfd import ScrfdDetector

        return ScrfdDetector.from_spec(location, settings)
    if name == "yunet":
        if not location:
            raise ValueError("yunet needs a model: yunet:/path/to/yunet.onnx")
        from .yunet import YunetDetector

        return YunetDetector(cpu_session(location, settings.threads), settings)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
