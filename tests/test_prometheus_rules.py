"""The Prometheus config and rules, checked and unit-tested by Prometheus' own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

RULES = ROOT / "deploy" / "prometheus"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian's prometheus package; .ci/run installs it)",
)


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_config_rules_and_their_unit_tests_pass():
    assert promtool("check", "config", "prometheus.yml").returncode == 0
    assert promtool("check", "rules", "rules.yml").returncode == 0
    result = promtool("test", "rules", "rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_fails_its_unit_test(tmp_path):
    """The unit tests pin what each rule computes: a wrong expression does not pass."""
    broken = (
        (RULES / "rules.yml")
        .read_text()
        .replace(
            'sum(increase(toonify_images_total{outcome="ok"}[5m]))',
            "sum(increase(toonify_images_total[5m]))",  # counts refusals as images
        )
    )
    assert broken != (RULES / "rules.yml").read_text()
    (tmp_path / "rules.yml").write_text(broken)
    shutil.copy(RULES / "rules.test.yml", tmp_path)
    result = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode != 0 and "toonify:cost_per_1000_images_usd:5m" in report
