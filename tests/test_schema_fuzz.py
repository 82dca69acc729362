"""schemathesis generates requests from /docs.json (valid ones, and each kind of invalid one) and
checks every answer against it: no 5xx, documented statuses, content types, headers and bodies,
valid requests accepted (the statuses a schema cannot rule out are in schemathesis.toml), invalid
ones refused, and 405 with Allow for methods the document does not list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_schemathesis_finds_nothing_against_the_document(serve, default_models):
    server = serve()
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{server.url}/docs.json",  # every check (schemathesis' default), as schemathesis.toml
            "--max-examples",
            "30",
            "--seed",
            "20261203",
            "--request-timeout",
            "60",
        ],
        cwd=ROOT,  # schemathesis.toml
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    assert " passed" in run.stdout and "failures" not in run.stdout.lower().split("summary")[-1]
