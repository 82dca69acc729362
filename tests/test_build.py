"""`bentoml build` packs the service, its sources and the default models (no Docker needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import ROOT


def test_bentoml_build_packs_service_and_models(default_models):
    import bentoml

    run = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    tag = run.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento = Path(bentoml.get(tag).path)
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert {model["tag"].split(":")[0] for model in info["models"]} >= {"toon-filter", "mtcnn"}
    for source in [
        "service.py",
        "generator.py",
        "preprocess/detectors/mtcnn.py",
        "static/index.html",
    ]:
        assert (bento / "src" / source).is_file(), source
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.39" in requirements and "onnxruntime==1.31.1" in requirements
