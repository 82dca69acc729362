"""MediaPipe's face models, out of the pinned ``mediapipe`` wheel into the model store.

The wheel (Apache-2.0) is fetched once from the package index with pip, checked against its
pinned sha256, and read as the zip it is: it is never installed (its dependencies are heavy)
and nothing of it is kept but the three model files, each checked against its own sha256 and
converted once to OpenVINO IR (the serving image carries OpenVINO's IR reader, not its TFLite
one), the IR's outputs checked equal to the ``.tflite``'s.
Where no package index answers, the build says so and the service keeps MTCNN.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import bentoml

from preprocess.detectors.mediapipe import FACE_MESH, FULL, LICENCE, SHORT

NAME = "mediapipe-face"
REQUIREMENT = "mediapipe==0.10.21"
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
MEMBERS = {
    SHORT.file: (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    FULL.file: (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    FACE_MESH: (
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
}
DESCRIPTIONS = {
    SHORT.file: "BlazeFace short range: 128x128 RGB in [-1, 1], 896 anchors (strides 8, 16), "
    "box + 6 keypoints",
    FULL.file: "BlazeFace full range (sparse): 192x192 RGB in [-1, 1], 2304 anchors (stride 4), "
    "box + 6 keypoints, faces up to about 5 m",
    FACE_MESH: "Face Mesh: a 192x192 face crop in [0, 1] (1.5x the box, eyes level) -> 468 "
    "landmarks (x, y, z) and a face-presence logit",
}
KEYPOINTS = ["right eye", "left eye", "nose tip", "mouth centre", "right ear", "left ear"]


class WheelUnavailable(Exception):
    """The pinned wheel could not be fetched or does not match its sha256."""


def wheel_cache() -> Path:
    """Where the fetched wheel is kept between builds (``TOONIFY_WHEEL_CACHE``)."""
    default = Path.home() / ".cache" / "toonify" / "wheels"
    return Path(os.environ.get("TOONIFY_WHEEL_CACHE", default))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(cache: Path | None = None) -> Path:
    """The pinned wheel, from the cache or the package index, its sha256 checked."""
    cache = cache or wheel_cache()
    path = cache / WHEEL
    if not (path.is_file() and _sha256(path.read_bytes()) == WHEEL_SHA256):
        cache.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
            "--quiet", "--dest", str(cache), REQUIREMENT,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not path.is_file():
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise WheelUnavailable(f"pip could not fetch {REQUIREMENT}: {reason}")
    digest = _sha256(path.read_bytes())  # 36 MB, read once
    if digest != WHEEL_SHA256:
        path.unlink()
        raise WheelUnavailable(f"{WHEEL} has sha256 {digest}, not the pinned {WHEEL_SHA256}")
    return path


def extract_models(wheel: Path, folder: Path) -> None:
    """The three models out of the wheel into ``folder`` as OpenVINO IR, each ``.tflite``
    checked against its sha256 first."""
    sources = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name, (member, digest) in MEMBERS.items():
                data = archive.read(member)
                if _sha256(data) != digest:
                    raise WheelUnavailable(f"{member} in {wheel.name} does not match its sha256")
                sources[name] = data
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WheelUnavailable(f"{wheel} is not the MediaPipe wheel: {exc}") from None
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in sources.items():
            source = Path(scratch) / Path(name).with_suffix(".tflite")
            source.write_bytes(data)
            to_ir(source, folder / name)


def to_ir(source: Path, target: Path) -> None:
    """``source`` saved as OpenVINO IR at ``target`` (weights kept in fp32), its outputs checked
    equal to the source's on one input."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    given = core.read_model(source)
    ov.save_model(given, target, compress_to_fp16=False)
    pixels = np.random.default_rng(0).random(tuple(given.inputs[0].shape), dtype=np.float32)
    answers = [
        core.compile_model(model, "CPU").create_infer_request().infer({0: pixels})
        for model in (given, core.read_model(target))
    ]
    for given, stored in zip(*(answer.values() for answer in answers), strict=True):
        if not np.allclose(given, stored, rtol=1e-5, atol=1e-5):
            raise WheelUnavailable(f"{target.name} does not answer as {source.name} does")


def import_mediapipe(wheel: Path | None = None) -> bentoml.Model:
    """Store the face detectors and Face Mesh as ``mediapipe-face`` (kept if already stored)."""
    from preprocess import DetectorSettings, create_detector

    digests = {name: digest for name, (_, digest) in MEMBERS.items()}
    try:
        existing = bentoml.models.get(f"{NAME}:latest")
        if existing.info.metadata.get("sha256") == digests:
            return existing
    except bentoml.exceptions.NotFound:
        pass
    wheel = wheel or fetch_wheel()
    with tempfile.TemporaryDirectory() as staging:
        extract_models(wheel, Path(staging))
        # Run once before storing: a file OpenVINO cannot read fails here, not at serving.
        create_detector(f"mediapipe:{staging}", DetectorSettings()).detect(_grey_photo())
        metadata = {
            "kind": "detector",
            "family": "mediapipe",
            "files": sorted(path.name for path in Path(staging).iterdir()),
            "sha256": digests,
            "licence": LICENCE,
            "source": f"{WHEEL} (sha256 {WHEEL_SHA256}), from the package index",
            "members": {name: member for name, (member, _) in MEMBERS.items()},  # IR <- wheel
            "descriptions": DESCRIPTIONS,
            "keypoints": KEYPOINTS,
            "input_sizes": {SHORT.file: SHORT.size, FULL.file: FULL.size, FACE_MESH: 192},
            "anchors": {SHORT.file: 896, FULL.file: 2304},
            "landmarks": 468,
        }
        with bentoml.models.create(NAME, labels={"kind": "detector"}, metadata=metadata) as model:
            for path in Path(staging).iterdir():
                (Path(model.path) / path.name).write_bytes(path.read_bytes())
    return bentoml.models.get(model.tag)


def _grey_photo():
    from PIL import Image

    return Image.new("RGB", (320, 240), (128, 128, 128))
