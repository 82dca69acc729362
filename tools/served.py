"""A real `bentoml serve` in a subprocess (source tree or built bento), for tests, benchmarks and
the load test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def wait_for_200(
    url: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.05,
) -> None:
    """Poll ``url`` until it answers 200. TimeoutError after ``timeout`` seconds;
    ChildProcessError as soon as ``alive()`` says whatever should answer has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ChildProcessError(f"{url}: the server exited before it answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


@contextlib.contextmanager
def hammering(url: str, paths: tuple[str, ...] = ("/readyz", "/metrics")) -> Iterator[None]:
    """Within the block, one thread per path GETs it in a tight loop: probes and scrapes at
    their worst."""
    stop = threading.Event()

    def hammer(path: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                client.get(path)

    threads = [threading.Thread(target=hammer, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_store() -> Path:
    return Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")) / "models"


class Served:
    """A real `bentoml serve` of service:Toonify in a subprocess.

    Each instance gets a BentoML home of its own (sharing the model store): `bentoml serve`
    wipes its home's Prometheus directory at start, which would reset any other instance's
    metrics.
    """

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        ready_timeout: float = 180,
        command: list[str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.log = log
        command = command or [sys.executable, "-m", "bentoml", "serve", "service:Toonify"]
        home = Path(tempfile.mkdtemp(prefix="toonify-serve-"))
        (home / "models").symlink_to(model_store(), target_is_directory=True)
        env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **env}
        # A free port can be taken between our look and the server's bind (BentoML picks free
        # ports for the dependency services too): another port, at most three times.
        for attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=cwd,
                env={**os.environ, **env},
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                self._wait_ready(ready_timeout)
                return
            except RuntimeError:
                if attempt == 2 or "Address already in use" not in log.read_text():
                    raise

    def _wait_ready(self, timeout: float) -> None:
        try:
            wait_for_200(f"{self.url}/readyz", timeout, alive=lambda: self.process.poll() is None)
        except ChildProcessError:
            raise RuntimeError(f"bentoml serve exited:\n{self.log.read_text()[-4000:]}") from None
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"not ready after {timeout} s:\n{self.log.read_text()[-4000:]}"
            ) from None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL for the whole instance at once, as a machine that dies: each BentoML worker
        runs in a session of its own, so its process group is not enough."""
        import psutil

        try:
            processes = [psutil.Process(self.process.pid)]
            processes += processes[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes, timeout=10)


def scrape(url: str) -> dict[str, float]:
    """Every sample on /metrics, keyed by name{labels}, summed over identical keys."""
    samples: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = samples.get(key, 0.0) + float(value)
    return samples


def wait_for_metric(url: str, key: str, reached: Callable[[float], bool], timeout: float = 30):
    """Poll /metrics until the sample ``key`` satisfies ``reached``: a test waits for the state
    it needs (uploads arriving, requests in flight) instead of sleeping. TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = scrape(url).get(key, 0.0)
        if reached(value):
            return value
        time.sleep(0.02)
    raise TimeoutError(f"{key} on {url}/metrics did not get there in {timeout:.0f} s")


def build_bento(bentofile: str = "bentofile.yaml") -> Path:
    """`bentoml build -f BENTOFILE` from the source tree; the built bento's folder."""
    import bentoml

    run = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", bentofile, "--output", "tag"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{run.stderr[-3000:]}")
    return Path(bentoml.get(run.stdout.strip().splitlines()[-1].removeprefix("__tag__:")).path)
