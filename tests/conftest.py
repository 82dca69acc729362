"""Shared fixtures: package-shipped photos, and real weights from ../shared/models if present."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.served import Served

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("TOONIFY_TEST_ASSETS", ROOT.parent / "shared" / "models"))

# Tests get a model store of their own, before anything imports bentoml; served instances
# started by the tests inherit it.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-test-bentoml-")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

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


@pytest.fixture
def settings_from(monkeypatch):
    """``settings_from({"TOONIFY_X": "1"})``: the settings as the service reads them, with exactly
    these TOONIFY_* variables in the environment."""
    from toonify.settings import Settings

    def read(environ: dict[str, str]):
        for name in [name for name in os.environ if name.startswith("TOONIFY_")]:
            monkeypatch.delenv(name)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        return Settings.from_env()

    return read


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


@pytest.fixture(scope="session")
def default_models():
    from model_store.build import build_defaults

    return {model.tag.name: model for model in build_defaults()}


@pytest.fixture(scope="session")
def mediapipe(default_models):
    """MediaPipe's detector and Face Mesh from the store, as ``make defaults`` stores them."""
    from model_store import detector_spec
    from preprocess import create_detector

    if "mediapipe-face" not in default_models:
        pytest.skip("MediaPipe's wheel was not reachable when the defaults were built")
    return create_detector(detector_spec(default_models["mediapipe-face"]))


@pytest.fixture(scope="session")
def learned_models(default_models):
    """AnimeGANv3 and SCRFD-2.5G from ../shared/models, imported as the README says."""
    from model_store.build import import_detector, import_generator
    from toonify.generation.signature import GeneratorSignature

    generator = import_generator(
        asset("animeganv3_tiny_cute.onnx"),
        "animeganv3",
        GeneratorSignature(layout="NHWC", value_range=(-1.0, 1.0), size=512),
        licence="AnimeGANv3 author's terms: non-commercial use only",
    )
    detector = import_detector(
        asset("scrfd_2.5g.onnx"), "scrfd-2.5g", "scrfd", "insightface: non-commercial research only"
    )
    return generator, detector


@pytest.fixture(scope="session")
def serve(tmp_path_factory):
    """Start a served instance with extra TOONIFY_* settings; all are stopped at the end."""
    started: list[Served] = []

    def start(**settings: str) -> Served:
        env = {f"TOONIFY_{k.upper()}": str(v) for k, v in settings.items()}
        log = tmp_path_factory.mktemp("serve") / "bentoml.log"
        server = Served(env, log)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server (Debian's package), emptied before each use of ``redis_url``."""
    from tools.redis_server import RedisServer, redis_available

    if not redis_available():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server) -> str:
    import redis

    if redis_server.process is None:
        redis_server.start()  # a test stopped it
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a served instance (through the ``serve`` fixture) or a Redis is
    ``served``; one that builds the offline defaults or imports the real models from
    ../shared/models (their quality is measured) is ``slow``."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "serve" in fixtures or "redis_server" in fixtures:
            item.add_marker(pytest.mark.served)
        if "learned_models" in fixtures or "default_models" in fixtures:
            item.add_marker(pytest.mark.slow)
