"""`make container-test`: the image run as users run it, checked over HTTP.

    python deploy/container/check.py [--image localhost/toonify:latest]

Non-root (the image's numeric user), read-only root filesystem with writable tmpfs where the
Kubernetes manifest mounts emptyDirs, PORT and the environment of deploy/cloudrun/service.yaml.
Waits for /readyz (and runs the image's HEALTHCHECK), toonifies a photo, reads /metrics, then
stops the container the way Kubernetes does (SIGTERM, then the grace period the manifests
declare) with requests in flight, and checks that every one was answered. Prints and writes
build/container-check.json: cold start (podman run to /readyz 200) and the time to stop.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import skimage.data
import yaml
from PIL import Image

from tools.containers import IMAGE, podman
from tools.served import wait_for_200

ROOT = Path(__file__).resolve().parents[2]


def manifest_settings() -> tuple[dict[str, str], list[str], int]:
    """Cloud Run's environment, Kubernetes' writable mounts and grace period."""
    cloudrun = yaml.safe_load((ROOT / "deploy" / "cloudrun" / "service.yaml").read_text())
    container = cloudrun["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    manifests = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    deployment = next(d for d in manifests if d and d.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
    return env, mounts, int(pod["terminationGracePeriodSeconds"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo(size: tuple[int, int] | None = None) -> bytes:
    image = Image.fromarray(skimage.data.astronaut())
    buffer = io.BytesIO()
    (image.resize(size) if size else image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def empty_dirs(mounts: list[str]) -> list[str]:
    """Volume arguments like Kubernetes' emptyDirs with fsGroup 1034: empty, writable by the
    image's user. (Podman's --tmpfs ignores the mode with runc here.)"""
    volumes = []
    for mount in mounts:
        folder = tempfile.mkdtemp(prefix="toonify-emptydir-")
        os.chown(folder, 1034, 1034)
        volumes += ["--volume", f"{folder}:{mount}:rw"]
    return volumes


def run(image: str, name: str, port: int, env: dict[str, str], mounts: list[str]) -> None:
    tmpfs = empty_dirs(mounts)
    environment = [
        arg for key, value in {**env, "PORT": str(port)}.items() for arg in ("-e", f"{key}={value}")
    ]
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        *tmpfs,
        "--user",
        "1034:1034",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        *environment,
        image,
    )


def wait_ready(url: str, timeout: float = 180) -> None:
    try:
        wait_for_200(f"{url}/readyz", timeout)
    except TimeoutError:
        raise SystemExit(f"not ready after {timeout} s") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=IMAGE)
    args = parser.parse_args()

    env, mounts, grace = manifest_settings()
    name = f"toonify-check-{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    run(args.image, name, port, env, mounts)
    try:
        wait_ready(url)
        cold_start = time.monotonic() - started
        health = podman("healthcheck", "run", name, check=False, capture=True)
        user = podman("exec", name, "id", "-u", capture=True).stdout.strip()
        with httpx.Client(base_url=url, timeout=120) as client:
            answer = client.post("/toonify", files={"image": ("a.jpg", photo())})
            assert answer.status_code == 200, answer.text
            assert Image.open(io.BytesIO(answer.content)).size == (512, 512)
            metrics = client.get("/metrics").text
            assert 'toonify_images_total{outcome="ok"} 1.0' in metrics, metrics[:2000]
        big = photo((4032, 3024))
        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(
                    httpx.post, f"{url}/toonify?paste_back=true", content=big, timeout=grace
                )
                for _ in range(4)
            ]
            time.sleep(1.0)  # all four in flight
            stopping = time.monotonic()
            podman("stop", "--time", str(grace), name)  # SIGTERM, SIGKILL after the grace period
            stopped = time.monotonic() - stopping
            statuses = [future.result().status_code for future in futures]
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name, capture=True)
    finally:
        logs = podman("logs", name, check=False, capture=True)
        podman("rm", "--force", name, check=False, capture=True)
    result = {
        "image": args.image,
        "cold_start_s": round(cold_start, 2),
        "healthcheck": health.returncode,
        "user": user,
        "answered_in_flight_at_sigterm": statuses,
        "stop_seconds": round(stopped, 1),
        "grace_period_s": grace,
        "exit_code": int(exit_code.stdout.strip() or -1),
    }
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "container-check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    problems = []
    if health.returncode != 0:
        problems.append(f"HEALTHCHECK failed: {health.stdout}{health.stderr}")
    if user != "1034":
        problems.append(f"runs as uid {user}")
    if statuses != [200] * 4:
        problems.append(f"requests in flight at SIGTERM answered {statuses}")
    if stopped >= grace:
        problems.append(f"took {stopped:.0f} s to stop (grace {grace} s)")
    if problems:
        print(logs.stdout[-5000:] + logs.stderr[-5000:])
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main()
