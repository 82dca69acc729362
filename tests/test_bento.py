"""The built bento, served the way its container runs it: exported (which packs the models, as
`bentoml containerize` does), unpacked into a folder of its own, in a fresh virtual environment
made only from the bento's locked requirements, with an empty model store."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tools.served import Served, build_bento

from .conftest import ROOT

pytestmark = [pytest.mark.container, pytest.mark.served]


@pytest.fixture(scope="module")
def bento(default_models, tmp_path_factory) -> Path:
    built = build_bento()
    archive = tmp_path_factory.mktemp("export") / "toonify.bento"
    tag = f"toonify:{built.name}"
    subprocess.run(
        [sys.executable, "-m", "bentoml", "export", tag, str(archive)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    unpacked = tmp_path_factory.mktemp("bento")
    with tarfile.open(archive) as bundle:
        bundle.extractall(unpacked, filter="data")
    assert (unpacked / "bento.yaml").is_file()
    assert {p.name for p in (unpacked / "models").iterdir()} >= {
        "toon-filter",
        "mtcnn",
        "mediapipe-face",
    }
    return unpacked


def test_built_bento_serves_from_a_fresh_environment(bento, tmp_path, astronaut):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-r",
            str(bento / "env" / "python" / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    empty_store = tmp_path / "bentoml-home"  # models must come from the bento itself
    env = {
        "BENTOML_HOME": str(empty_store),
        "PYTHONPATH": "",
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
    }
    server = Served(
        env,
        tmp_path / "serve.log",
        cwd=tmp_path,
        command=[str(venv / "bin" / "python"), "-m", "bentoml", "serve", str(bento)],
    )
    try:
        buffer = io.BytesIO()
        astronaut.save(buffer, "JPEG", quality=90)
        response = httpx.post(f"{server.url}/toonify", content=buffer.getvalue(), timeout=120)
        assert response.status_code == 200, response.text
        assert Image.open(io.BytesIO(response.content)).size == (512, 512)
        assert httpx.get(f"{server.url}/metrics").text.count("toonify_images_total") > 0
    finally:
        server.stop()
    assert not (empty_store / "models" / "toon-filter").exists()
