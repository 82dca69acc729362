"""The README's commands, run as written (with this test server's address and interpreter)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

from PIL import Image

from .conftest import ROOT, asset

README = (ROOT / "README.md").read_text()


def command(starting_with: str) -> str:
    """The README line (joined over backslash continuations) that starts with this text."""
    joined = re.sub(r"\\\n\s*", "", README)
    for line in joined.splitlines():
        stripped = line.strip().strip("`(")
        if stripped.startswith(starting_with):
            return stripped.split("`")[0].split(" #")[0].strip()
    raise AssertionError(f"README has no command starting with {starting_with!r}")


def run(line: str, cwd) -> subprocess.CompletedProcess:
    args = [sys.executable if a == ".venv/bin/python" else a for a in shlex.split(line)]
    if args[0] == "python":
        args[0] = sys.executable
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_readme_curl_returns_a_toon_of_the_astronaut(serve, default_models, tmp_path):
    server = serve()
    assert run(command('python -c "import skimage.data'), tmp_path).returncode == 0
    curl = command("curl -F image=@astronaut.png").replace("http://localhost:3000", server.url)
    result = run(curl, tmp_path)
    assert result.returncode == 0, result.stderr
    toon = Image.open(tmp_path / "toon.jpg")
    assert toon.format == "JPEG" and toon.size == (512, 512)
    raw = command("curl --data-binary @astronaut.png").replace("http://localhost:3000", server.url)
    result = run(raw, tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "whole.png").size == (512, 512)


def test_readme_animegan_import_command(default_models, tmp_path):
    asset("animeganv3_tiny_cute.onnx")
    line = command(".venv/bin/python -m model_store import-generator ../shared/models/animeganv3")
    line = line.replace("../shared/models/", f"{asset('animeganv3_tiny_cute.onnx').parent}/")
    result = run(line, ROOT)
    assert result.returncode == 0, result.stderr
    assert "imported animeganv3:" in result.stdout
