"""`bentoml build` packs the service, its sources and the default models (no Docker needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.served import build_bento

from .conftest import ROOT

pytestmark = pytest.mark.slow  # bentoml build, hadolint


def test_bentoml_build_packs_service_and_models(default_models):
    bento = build_bento()
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    # The bentofile's models, and those the services reference (the default detector).
    listed = info["models"] + [model for service in info["services"] for model in service["models"]]
    packed = {model["tag"].split(":")[0] for model in listed}
    assert packed >= {"toon-filter", "mtcnn", "mediapipe-face"}
    for source in [
        "service.py",
        "toonify/generation/generator.py",
        "toonify/cost_profiles.json",
        "preprocess/detectors/mtcnn.py",
        "preprocess/detectors/mediapipe.py",
        "model_store/load.py",
        "static/index.html",
    ]:
        assert (bento / "src" / source).is_file(), source
    packed = {path.name for path in (bento / "src").iterdir()}
    # Only what the bentofile includes (and BentoML's copy of the bentofile), at top level only:
    # not tests, benchmarks, or folders of the same names under build/ or .venv/.
    expected = {"service.py", "toonify", "preprocess", "model_store", "static", "bentofile.yaml"}
    assert packed == expected
    assert not list((bento / "src").glob("*/**/toonify"))
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.39" in requirements and "onnxruntime==1.31.1" in requirements


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name("hadolint")
    return subprocess.run(
        [str(binary), "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_generated_dockerfile_passes_hadolint_and_runs_as_non_root(default_models):
    dockerfile = build_bento("bentofile.yaml") / "env" / "docker" / "Dockerfile"
    lint = hadolint(dockerfile)
    assert lint.returncode == 0, lint.stdout
    text = dockerfile.read_text()
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert text.strip().splitlines()[-2].strip() == "USER 1034:1034"  # numeric, for runAsNonRoot
    runs = [line for line in text.splitlines() if line.startswith("RUN ")]
    assert not [r for r in runs if "{apt" in r]  # BentoML's brace expansion, which sh ignores


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install flask\n")
    assert hadolint(bad).returncode != 0


def gpu_bentofile(tmp_path: Path) -> str:
    """The GPU variant as `make build-gpu` writes it: bentofile.yaml plus deploy/gpu/overrides."""
    written = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "gpu" / "bentofile.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    path = ROOT / "build" / f"bentofile.gpu.{tmp_path.name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(written.stdout)
    return str(path.relative_to(ROOT))


def test_gpu_bento_swaps_the_runtime_and_base_image(default_models, tmp_path):
    bento = build_bento(gpu_bentofile(tmp_path))
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert "onnxruntime-gpu==1.31.1" in requirements
    assert not [r for r in requirements if r.startswith(("onnxruntime==", "openvino=="))]
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "nvidia/cuda:12.8.1" in dockerfile
    assert hadolint(bento / "env" / "docker" / "Dockerfile").returncode == 0
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert {e["name"]: e["value"] for e in info["envs"]}["TOONIFY_BACKEND"] == "onnxruntime"
    assert (bento / "src" / "toonify" / "generation" / "generator.py").is_file()  # the same sources


def test_gpu_lock_differs_from_the_cpu_lock_only_in_the_runtime():
    cpu_lock = set((ROOT / "requirements.txt").read_text().splitlines()[1:])
    gpu_lock = set((ROOT / "requirements-gpu.txt").read_text().splitlines()[1:])
    assert cpu_lock - gpu_lock == {
        "onnxruntime==1.31.1",
        "openvino==2026.4.1",
        "openvino-telemetry==2025.2.0",
    }
    assert gpu_lock - cpu_lock == {"onnxruntime-gpu==1.31.1"}
