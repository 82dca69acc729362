"""Shared fixtures: package-shipped photos, and real weights from ../shared/models if present."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TOONIFY_TEST_ASSETS", ROOT.parent / "shared" / "models"))

# FFHQ's mean eye centres in a 512 crop (the 5-point template facexlib ships for FFHQ 512).
FFHQ_EYES_512 = np.array([[192.98, 239.95], [318.90, 240.19]])


def asset(name: str) -> Path:
    """A file from ../shared/models; the test is skipped where the folder is absent."""
    path = ASSETS / name
    if not path.is_file():
        pytest.skip(f"{path} not available (set TOONIFY_TEST_ASSETS)")
    return path


def insightface_image(name: str) -> Path:
    spec = importlib.util.find_spec("insightface")
    return Path(spec.origin).parent / "data" / "images" / name


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut())


@pytest.fixture(scope="session")
def t1_photo() -> Image.Image:
    return Image.open(insightface_image("t1.jpg")).convert("RGB")


DETECTOR_SPECS = {
    "mtcnn": lambda: "mtcnn",
    "scrfd": lambda: f"scrfd:{asset('scrfd_2.5g.onnx')}",
    "yunet": lambda: f"yunet:{asset('yunet_s_dynamic.onnx')}",
}


@pytest.fixture(scope="session")
def detectors() -> dict:
    from preprocess import create_detector

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = create_detector(DETECTOR_SPECS[name]())
        return cache[name]

    return get
