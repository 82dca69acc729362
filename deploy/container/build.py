"""`make container`: the bento's own Dockerfile, built with podman, models inside.

    python deploy/container/build.py [--public-base] [--tag localhost/toonify:latest]

1. The base image. BentoML's Dockerfile starts FROM python:3.11-slim (Debian bookworm, Python
   3.11). Where no registry can be reached, the same Debian release with its Python 3.11 is made
   with debootstrap from this machine's Debian mirror and imported as
   localhost/toonify-base:bookworm-python3.11; `--public-base` keeps the public image.
2. The bento: `bentoml build`, then exported (which packs the models, as `bentoml containerize`
   does) and unpacked as the build context.
3. `podman build` of the bento's env/docker/Dockerfile (deploy/docker/Dockerfile.template) with
   BASE_IMAGE and this machine's package indexes as build arguments, on the host network.
   The image size and build time are printed and written to build/container.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tools.containers import BASE_IMAGE, IMAGE, image_exists, podman

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (containers reach the same one)."""
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        if source.is_file():
            found = re.search(r"(?:URIs:\s*|deb\s+)(https?://\S+/debian)\b", source.read_text())
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def make_base_image() -> None:
    """Debian bookworm with Python 3.11, pip and venv, set up as python:3.11-slim is."""
    with tempfile.TemporaryDirectory(prefix="toonify-rootfs-") as rootfs:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3.11,python3-pip,python3-venv",
                "bookworm",
                rootfs,
                debian_mirror(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        root = Path(rootfs)
        for name, target in (("python", "python3.11"), ("pip", "pip3")):  # as the slim image has
            if not (root / "usr/bin" / name).exists():
                (root / "usr/bin" / name).symlink_to(target)
        # python:3.11-slim's pip installs into the system Python; Debian's refuses (PEP 668).
        (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / cache, ignore_errors=True)
        archive = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "--change", 'CMD ["python3"]', "-", BASE_IMAGE],
            stdin=archive.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        archive.wait()


def build_context() -> Path:
    """The exported bento, unpacked: sources, locked requirements, models, Dockerfile."""
    built = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    context = BUILD / "container-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "toonify.bento"
        subprocess.run(
            [sys.executable, "-m", "bentoml", "export", tag, str(archive)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        with tarfile.open(archive) as bundle:
            bundle.extractall(context, filter="data")
    return context


def detector_family() -> str:
    """The family of the detector the bento packs: the image keeps insightface and what it
    imports only for SCRFD (deploy/docker/Dockerfile.template)."""
    import bentoml

    from toonify.model_tags import stored_detector
    from toonify.settings import SETTINGS

    return bentoml.models.get(stored_detector(SETTINGS.detector_model)).info.metadata["family"]


BUILD_CA = "/run/toonify-build-ca.crt"


def package_indexes() -> list[str]:
    """Build arguments (and a read-only mount of the CA bundle) for this machine's pip
    configuration: its http(s) indexes (file indexes stay outside) and the certificate bundle it
    trusts them with, for pip and uv inside the build."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    settings = dict(
        re.findall(r"^[\w:.]*?(index-url|extra-index-url|cert)='([^']*)'", listed, re.M)
    )
    args = []
    if settings.get("cert") and Path(settings["cert"]).is_file():
        args += ["--volume", f"{settings['cert']}:{BUILD_CA}:ro"]
        args += ["--build-arg", f"PIP_CERT={BUILD_CA}", "--build-arg", f"SSL_CERT_FILE={BUILD_CA}"]
    for key, pip_name, uv_name in (
        ("index-url", "PIP_INDEX_URL", "UV_INDEX_URL"),
        ("extra-index-url", "PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
    ):
        urls = [url for url in settings.get(key, "").split() if url.startswith("http")]
        if urls:
            args += [
                "--build-arg",
                f"{pip_name}={' '.join(urls)}",
                "--build-arg",
                f"{uv_name}={' '.join(urls)}",
            ]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--public-base", action="store_true", help="FROM python:3.11-slim")
    parser.add_argument("--tag", default=IMAGE)
    args = parser.parse_args()

    started = time.monotonic()
    base = "python:3.11-slim" if args.public_base else BASE_IMAGE
    if not args.public_base and not image_exists(BASE_IMAGE):
        print(f"making {BASE_IMAGE} with debootstrap from {debian_mirror()}", flush=True)
        make_base_image()
    base_seconds = time.monotonic() - started
    context = build_context()
    print(f"building {args.tag} from {context} on {base}", flush=True)
    podman(
        # Docker format keeps the HEALTHCHECK (the OCI image format has no such field).
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"DETECTOR_FAMILY={detector_family()}",
        *package_indexes(),
        "-f",
        str(context / "env" / "docker" / "Dockerfile"),
        "-t",
        args.tag,
        str(context),
    )
    seconds = time.monotonic() - started
    size = int(podman("image", "inspect", "--format", "{{.Size}}", args.tag, capture=True).stdout)
    record = {
        "image": args.tag,
        "base": base,
        "size_mb": round(size / 2**20),
        "build_seconds": round(seconds),
        "base_image_seconds": round(base_seconds),
    }
    (BUILD / "container.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
