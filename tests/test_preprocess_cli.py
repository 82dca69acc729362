"""The alignment debugging CLI, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import ROOT


@pytest.mark.slow  # a subprocess or a real timeout: `make test`, not test-fast
def test_cli_writes_faces_and_reports_bad_files(tmp_path, astronaut):
    photo = tmp_path / "astronaut.jpg"
    astronaut.save(photo, quality=92)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "preprocess",
            str(bad),
            str(photo),
            "--out",
            str(out),
            "--size",
            "256",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "notes.txt" in run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["file"] == str(photo) and record["index"] == 0
    assert len(record["landmarks"]) == 5 and len(record["quad"]) == 4 and len(record["box"]) == 4
    assert Image.open(out / "astronaut_0.png").size == (256, 256)
