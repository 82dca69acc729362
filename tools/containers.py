"""Podman as the container build, its check and the fleet load test use it.

Podman's default OCI runtime (crun) fails on setrlimit in some sandboxes, and raising a limit to
the host's own hard value is refused where CAP_SYS_RESOURCE is missing; runc with limits at or
under the host's works in both, and on an ordinary machine changes nothing that matters.
"""

from __future__ import annotations

import resource
import shutil
import subprocess

BASE_IMAGE = "localhost/toonify-base:bookworm-python3.11"
IMAGE = "localhost/toonify:latest"


def available() -> str | None:
    """Why podman cannot be used here, or None if it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install podman buildah runc)"
    if shutil.which("runc") is None:
        return "runc is not installed (Debian: apt-get install runc)"
    return None


def limits() -> list[str]:
    files = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
    processes = min(resource.getrlimit(resource.RLIMIT_NPROC)[0] - 1, 32768)
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={processes}:{processes}"]


def podman(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    command = ["podman", "--runtime", "runc", *args]
    if args and args[0] in ("run", "build", "create"):
        command[4:4] = limits()
    return subprocess.run(command, check=check, capture_output=capture, text=True)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0
