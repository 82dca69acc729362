"""Print the GPU variant's bentofile: bentofile.yaml with deploy/gpu/overrides.yaml merged in.

python deploy/gpu/bentofile.py > build/bentofile.gpu.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def merged(base: dict, overrides: dict) -> dict:
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            result[key] = merged(base[key], value)
        else:
            result[key] = value
    return result


def gpu_bentofile() -> dict:
    base = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    overrides = yaml.safe_load((ROOT / "deploy" / "gpu" / "overrides.yaml").read_text())
    return merged(base, overrides)


if __name__ == "__main__":
    yaml.safe_dump(gpu_bentofile(), sys.stdout, sort_keys=False)
