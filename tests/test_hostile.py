"""What internet traffic holds, against real served instances: slow clients, scans, amplifying
requests, malformed forms, overload, killed workers and SIGTERM mid-request.

Timings are read from the server's own Server-Timing header, not from the client, which shares
the two cores with the server.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from PIL import Image

from loadtest.photos import phone_jpeg
from tools.served import hammering, scrape, wait_for_metric

from .conftest import insightface_image


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def server_ms(response: httpx.Response, stage: str) -> float:
    found = re.search(rf"{stage};dur=([\d.]+)", response.headers.get("server-timing", ""))
    assert found, response.headers.get("server-timing")
    return float(found.group(1))


@pytest.fixture(scope="module")
def server(serve, default_models):
    return serve(max_in_flight=4, max_receiving=6, retry_after_s=2)


# --- slow clients --------------------------------------------------------------------------------


def slow_upload(url: str, seconds: float, results: list, declared: int = 1_000_000) -> None:
    """Headers, then one byte every 0.25 s; the status and when it came, as the server saw it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=seconds + 10) as sock:
        sock.sendall(
            f"POST /toonify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        sock.settimeout(0.25)
        answer = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                try:
                    sock.sendall(b"\xff")
                except OSError:
                    break
            except OSError:
                break
        results.append(answer)


def slow_uploads(url: str, count: int, seconds: float) -> list[bytes]:
    results: list[bytes] = []
    threads = [
        threading.Thread(target=slow_upload, args=(url, seconds, results)) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads, results


def gateway_ms(answer: bytes) -> float:
    return float(re.search(rb"gateway;dur=([\d.]+)", answer).group(1))


def test_slow_uploads_do_not_starve_the_others(server, astronaut):
    threads, results = slow_uploads(server.url, 5, 10)  # 1 byte every 0.25 s each
    wait_for_metric(server.url, "toonify_uploads_receiving", lambda n: n == 5)
    photo = encoded(astronaut)
    for _ in range(3):  # everyone else is served meanwhile: slow uploads hold no processing slot
        response = httpx.post(f"{server.url}/toonify", content=photo, timeout=60)
        assert response.status_code == 200, response.text
    for thread in threads:
        thread.join()
    assert [answer.split(b" ", 2)[1] for answer in results] == [b"408"] * 5
    for answer in results:  # cut off by the minimum rate after its 3 s of grace
        assert 3000 <= gateway_ms(answer) <= 4500


def test_slow_uploads_are_bounded_in_count_and_time(server, astronaut):
    threads, results = slow_uploads(server.url, 9, 10)
    for thread in threads:
        thread.join()
    statuses = sorted(int(answer.split(b" ", 2)[1]) for answer in results)
    # max_receiving (6) were let in, and each was cut off within seconds; the rest refused at once.
    assert statuses == [408] * 6 + [503] * 3, statuses
    assert max(gateway_ms(answer) for answer in results) <= 4500
    assert (
        httpx.post(f"{server.url}/toonify", content=encoded(astronaut), timeout=60).status_code
        == 200
    )


# --- scans ---------------------------------------------------------------------------------------


def series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def test_a_scan_of_made_up_paths_adds_no_metric_series(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.get("/made-up")
        client.get("/metrics")
        before = client.get("/metrics").text
        rng = random.Random(5)
        for _ in range(400):
            words = ["wp-admin", "phpmyadmin", ".env", "x" * 60, str(rng.random())]
            assert client.get(f"/{rng.choice(words)}/{rng.choice(words)}").status_code == 404
        after = client.get("/metrics").text
    assert "wp-admin" not in after and ".env" not in after
    assert series(after) - series(before) <= {  # made-up paths share one label: no new series
        line
        for line in series(after)
        if "pid=" in line  # BentoML's per-process gauges
    }
    assert len(after) < len(before) + 500  # counters grew by a few digits, nothing else


# --- amplification -------------------------------------------------------------------------------


def test_an_amplifying_request_is_refused_before_generation(server):
    t1 = insightface_image("t1.jpg").read_bytes()  # 6 faces, 130 KB
    before = scrape(server.url).get('toonify_stage_seconds_count{stage="generate"}', 0)
    response = httpx.post(
        f"{server.url}/toonify?all_faces=true&return_aligned=true&size=4096&format=png",
        content=t1,
        timeout=60,
    )
    assert response.status_code == 413 and response.json()["error"] == "output_too_large"
    assert "MP" in response.json()["detail"]
    after = scrape(server.url).get('toonify_stage_seconds_count{stage="generate"}', 0)
    assert after == before  # nothing was generated for it


# --- malformed forms ---------------------------------------------------------------------------

PHOTO_PART = b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nJPEGDATA'


def multipart(*parts: bytes, boundary: bytes = b"XyZ") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary + b"--\r\n"


MALFORMED = {
    "two photos": multipart(PHOTO_PART, PHOTO_PART),
    "a text field over 1 KB": multipart(
        PHOTO_PART, b'Content-Disposition: form-data; name="format"\r\n\r\n' + b"j" * 1_100_000
    ),
    "17 fields": multipart(
        PHOTO_PART,
        *[f'Content-Disposition: form-data; name="f{i}"\r\n\r\nx'.encode() for i in range(17)],
    ),
    "a part without a name": multipart(b"Content-Disposition: form-data\r\n\r\nxx"),
    "a link instead of a file": multipart(
        b'Content-Disposition: form-data; name="image"\r\n\r\nhttp://169.254.169.254/latest'
    ),
    "garbage": b"--XyZ\r\nno headers at all, no end",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_multipart_is_a_400_in_json(server, name):
    response = httpx.post(
        f"{server.url}/toonify",
        content=MALFORMED[name],
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("bad_request", "bad_option", "not_an_image")


def test_multipart_without_a_boundary(server):
    response = httpx.post(
        f"{server.url}/toonify", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
    )
    assert response.status_code == 400 and "boundary" in response.json()["detail"]


# --- formats phones write ------------------------------------------------------------------------


def test_a_multi_picture_jpeg_from_a_phone_is_toonified(server, astronaut):
    buffer = io.BytesIO()
    astronaut.save(buffer, "MPO", save_all=True, append_images=[Image.new("RGB", (128, 96))])
    response = httpx.post(f"{server.url}/toonify", content=buffer.getvalue(), timeout=60)
    assert response.status_code == 200, response.text


# --- after an overload ---------------------------------------------------------------------------


def test_a_lone_request_after_an_overload_does_not_wait_for_company(server, astronaut):
    photo = encoded(astronaut)
    with ThreadPoolExecutor(12) as pool:
        statuses = list(
            pool.map(
                lambda _: (
                    httpx.post(f"{server.url}/toonify", content=photo, timeout=120).status_code
                ),
                range(24),
            )
        )
    assert 200 in statuses and set(statuses) <= {200, 503}
    lone = httpx.post(f"{server.url}/toonify", content=photo, timeout=60)
    assert lone.status_code == 200
    # It went to the generator at once: its wait is a small part of its own generation time.
    assert server_ms(lone, "generator_queue") < 0.5 * server_ms(lone, "generate")


# --- deadlines -----------------------------------------------------------------------------------


def test_a_request_past_its_deadline_gets_a_json_504(serve, default_models, astronaut):
    quick = serve(request_timeout_s=1, body_idle_timeout_s=10)
    photo = encoded(astronaut)

    def late_body():
        yield photo[:1000]
        time.sleep(1.5)  # the upload itself uses up the request's time
        yield photo[1000:]

    response = httpx.post(
        f"{quick.url}/toonify",
        content=late_body(),
        timeout=30,
        headers={"content-length": str(len(photo))},
    )
    assert response.status_code == 504, response.text
    assert response.json()["error"] == "timeout" and response.headers["retry-after"]


# --- killed workers and SIGTERM -----------------------------------------------------------------


def worker(server, service: str) -> psutil.Process:
    for process in psutil.Process(server.process.pid).children(recursive=True):
        arguments = process.cmdline()
        if (
            "--service-name" in arguments
            and arguments[arguments.index("--service-name") + 1] == service
        ):
            return process
    raise AssertionError(f"no {service} worker")


@pytest.mark.parametrize("service", ["toonify-preprocess", "toonify-generator"])
def test_a_killed_worker_gives_503_with_retry_after_never_500_or_a_hang(
    serve, default_models, service, tmp_path
):
    server = serve(request_timeout_s=30)
    pexels = phone_jpeg(Image.open(insightface_image("t1.jpg")))  # 12 MP, slow enough to catch
    photo = pexels

    def post(_: int) -> tuple[int, str | None, dict, float]:
        started = time.monotonic()
        response = httpx.post(f"{server.url}/toonify?paste_back=true", content=photo, timeout=60)
        body = response.json() if response.status_code != 200 else {}
        return (
            response.status_code,
            response.headers.get("retry-after"),
            body,
            time.monotonic() - started,
        )

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, i) for i in range(6)]
        wait_for_metric(server.url, "toonify_requests_in_flight", lambda n: n >= 4)
        os.kill(worker(server, service).pid, signal.SIGKILL)
        results = [future.result() for future in futures]
    for status, retry_after, body, seconds in results:
        assert status in (200, 503), (status, body)
        if status == 503:
            assert retry_after and body["error"] in ("unavailable", "generator_unavailable")
        assert seconds < 30 + 5  # within the request's deadline
    # The worker is replaced and the service answers again.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            httpx.post(
                f"{server.url}/toonify?paste_back=true", content=photo, timeout=60
            ).status_code
            == 200
        ):
            break
        time.sleep(1)
    else:
        raise AssertionError("the service did not recover from a killed worker")


def test_sigterm_answers_every_request_in_flight(serve, default_models):
    server = serve()
    photo = phone_jpeg(Image.open(insightface_image("t1.jpg")))
    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(
                httpx.post, f"{server.url}/toonify?paste_back=true", content=photo, timeout=120
            )
            for _ in range(6)
        ]
        # All six are in, some being decoded, some at the generator.
        wait_for_metric(server.url, "toonify_requests_in_flight", lambda n: n == 6)
        stopping = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)  # what `docker stop` and Kubernetes do
        statuses = [future.result().status_code for future in futures]
    assert statuses == [200] * 6
    server.process.wait(timeout=60)
    assert time.monotonic() - stopping < 60  # and then it exits, well within the grace period


# --- the calls between services ------------------------------------------------------------------


def test_uploads_never_fail_while_probes_and_scrapes_hammer_the_service(server, astronaut):
    """BentoML's internal client used to renew its connection pool every 100 calls by closing it
    under calls still reading ('Connection closed.', hangs); /readyz polls count as calls."""
    photo = encoded(astronaut.resize((256, 256)))
    with hammering(server.url), httpx.Client(base_url=server.url, timeout=60) as client:
        with ThreadPoolExecutor(3) as pool:
            answers = pool.map(lambda _: client.post("/toonify", content=photo), range(150))
            statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 150, {s: statuses.count(s) for s in set(statuses)}
    # Not one call between the services failed and had to be retried.
    assert "call to another service failed" not in server.log.read_text()


def test_the_entry_worker_does_not_grow_with_requests(server):
    """Each request used to leave ~4.5 KB behind in every worker (BentoML's tracing with no
    exporter) and the cost gauge kept every event of its 5-minute window."""
    entry = worker(server, "toonify")

    def hammer(count: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: client.get("/made-up").status_code, range(count)))

    hammer(2000)  # warm-up: caches, pools, first allocations
    before = entry.memory_info().rss
    hammer(6000)
    growth_mb = (entry.memory_info().rss - before) / 2**20
    assert growth_mb < 6, f"the entry worker grew {growth_mb:.1f} MB over 6,000 requests"
