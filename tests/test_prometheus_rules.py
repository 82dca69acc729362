"""The Prometheus config and rules, checked and unit-tested by Prometheus' own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

RULES = ROOT / "deploy" / "prometheus"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian's prometheus package; .ci/run installs it)",
)


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_config_rules_and_their_unit_tests_pass():
    assert promtool("check", "config", "prometheus.yml").returncode == 0
    assert promtool("check", "rules", "rules.yml").returncode == 0
    result = promtool("test", "rules", "rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
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


def test_every_rule_reads_recordings_made_before_it_in_its_own_group():
    """Rules of one group are evaluated in order; the order of groups is not fixed. A rule that
    read another group's recording would see this evaluation's value or the last one's by
    chance (the alert annotation that made promtool fail one run in five)."""
    groups = yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
    recorded = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    for group in groups:
        earlier: set[str] = set()
        for rule in group["rules"]:
            read = {name for name in recorded if name in rule["expr"]}
            assert read <= earlier, f"{rule.get('alert') or rule['record']} reads {read - earlier}"
            if "record" in rule:
                earlier.add(rule["record"])
