"""One client must not shut everyone out: attackers on 127.0.0.2, a normal user on 127.0.0.1.

Each test runs a cheap attack from one address against a served instance on its default bounds
and checks that the normal user is still served at the full level, that memory stays bounded,
and that no photo reaches the disk. Timings are the server's own (Server-Timing).
"""

from __future__ import annotations

import io
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from loadtest.photos import no_face_photo, phone_jpeg
from tools.attacks import (
    attacker_addresses,
    attacker_socket,
    attacking,
    junk_flood,
    normal_user,
    served_at_full_level,
    stalled_upload,
    unread_answers,
)

HOLD_S = 20.0


@pytest.fixture(scope="module")
def server(serve, default_models):
    return serve()


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_stalled_uploads_from_one_address_leave_the_others_served(server, photo):
    """64 connections that send headers and nothing else, reconnecting as soon as they are cut
    off: they hold the receiving slots of their own address only."""

    stop, _ = attacking(64, stalled_upload(server.url))
    try:
        answers = normal_user(server.url, photo, HOLD_S)
    finally:
        stop.set()
    assert len(answers) >= 5 and served_at_full_level(answers) >= 0.8, answers


@pytest.mark.parametrize(("addresses", "each"), [(8, 20), (32, 8)])
def test_stalled_uploads_from_many_addresses_leave_the_others_served(
    server, photo, addresses, each
):
    """Many addresses at their shares once filled the hard limit (8 x 20 stalls served the
    normal user 0 of 33): an arrival with nothing arriving takes over a stalled upload of the
    address holding the most."""
    stalls = [stalled_upload(server.url, address) for address in attacker_addresses(addresses)]
    stop, _ = attacking(each, *stalls)
    try:
        answers = normal_user(server.url, photo, HOLD_S)
    finally:
        stop.set()
    assert len(answers) >= 5 and served_at_full_level(answers) >= 0.8, answers


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send ``request`` as it is (no client library would send it) and read the answer."""
    with attacker_socket(url) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            if length and len(body) >= int(length[1]):
                break
        return answer


def test_a_query_of_25000_names_is_refused_at_once(server):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    names = [a + b + c for a in digits for b in digits for c in digits][:25_000]
    query = "&".join(names)  # 25,000 distinct names in 100 KB
    ready = []

    def probe(stop: threading.Event) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                ready.append(client.get("/readyz").status_code)

    request = f"POST /toonify?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n12345"
    stop, threads = attacking(1, probe)
    try:
        answers = [raw_exchange(server.url, request.encode()) for _ in range(20)]
    finally:
        stop.set()
        threads[0].join()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 400") and b'"bad_request"' in answer, answer[:300]
        gateway_ms = float(re.search(rb"gateway;dur=([\d.]+)", answer)[1])
        assert gateway_ms < 1000  # refused before anything parsed it
    assert ready and set(ready) == {200}  # the entry worker answered probes meanwhile


def test_junk_floods_from_one_address_leave_the_others_at_the_full_level(server, photo):
    """40 loops of 5-byte bodies: every one is refused, and the flood counts against its own
    address, not against the normal user's level."""
    refused: list[int] = []
    stop, threads = attacking(40, junk_flood(server.url, refused))
    try:
        answers = normal_user(server.url, photo, HOLD_S / 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(refused) > 100 and set(refused) <= {400, 503}
    assert served_at_full_level(answers) >= 0.8


def service_worker(server, service: str = "toonify") -> psutil.Process:
    for process in psutil.Process(server.process.pid).children(recursive=True):
        arguments = process.cmdline()
        if "--service-name" in arguments and arguments[arguments.index("--service-name") + 1] == (
            service
        ):
            return process
    raise AssertionError(f"no {service} worker")


def instance_rss_mb(server) -> float:
    processes = [psutil.Process(server.process.pid)]
    processes += processes[0].children(recursive=True)
    return sum(process.memory_info().rss for process in processes) / 2**20


def test_unread_answers_are_bounded_in_memory(server, astronaut):
    """40 clients ask for a 12 MP photo pasted back as PNG (9 MB each) and never read: the
    answers waiting for them are bounded per client and in time."""
    upload = phone_jpeg(astronaut)
    path = "/toonify?paste_back=true&format=png"
    with httpx.Client(base_url=server.url, timeout=120) as client:  # the same work, read, first
        for _ in range(2):
            assert client.post(path, content=upload).status_code == 200
    entry = service_worker(server)
    before_entry, before = entry.memory_info().rss / 2**20, instance_rss_mb(server)
    sockets = unread_answers(server.url, path, upload, 40)
    peak_entry, peak = before_entry, before
    ends = time.monotonic() + HOLD_S
    while time.monotonic() < ends:
        peak_entry = max(peak_entry, entry.memory_info().rss / 2**20)
        peak = max(peak, instance_rss_mb(server))
        time.sleep(0.2)  # a sampling interval, not a synchronisation
    for sock in sockets:
        sock.close()
    print(
        f"entry {before_entry:.0f} -> {peak_entry:.0f} MB, instance {before:.0f} -> {peak:.0f} MB"
    )
    # The answers wait in the entry worker, bounded by the client's share of the budget and by
    # the write deadline; the photos being worked on by the upload bytes in flight and the
    # preprocessing worker's pixel budget (one 12 MP paste_back at a time).
    assert peak - before < 150, (before, peak)
    assert httpx.post(f"{server.url}/toonify", content=upload, timeout=120).status_code == 200


def test_photos_without_a_face_leave_nothing_behind(server):
    """Every 422 no_face once kept its decoded photo (12-190 MB) until Python's next full garbage
    collection, which a busy worker may not reach before it runs out of memory."""
    photos = [no_face_photo("JPEG"), no_face_photo("PNG")]
    worker = service_worker(server, "toonify-preprocess")
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for photo in photos:  # the allocator's pools for these sizes, once
            assert client.post("/toonify", content=photo).status_code == 422
        before = worker.memory_info().rss / 2**20
        for index in range(24):
            answer = client.post("/toonify", content=photos[index % 2])
            assert answer.status_code == 422 and answer.json()["error"] == "no_face"
    after = worker.memory_info().rss / 2**20
    print(f"preprocessing worker {before:.0f} -> {after:.0f} MB after 24 photos without a face")
    assert after - before < 60, (before, after)


def photo_files(root: Path, since: float, token: bytes) -> tuple[list[Path], list[Path]]:
    """Files under ``root`` holding ``token``, and request folders made since ``since``."""
    holding, folders = [], []
    for path in root.rglob("*"):
        try:
            if path.is_dir():
                if path.name.startswith("bentoml-request") and path.stat().st_mtime >= since:
                    folders.append(path)
            elif path.is_file() and path.stat().st_mtime >= since and path.stat().st_size < 1e8:
                if token in path.read_bytes():
                    holding.append(path)
        except OSError:
            continue  # gone while we looked
    return holding, folders


def test_no_photo_bytes_reach_the_disk(server, photo):
    token = secrets.token_hex(16).encode()
    marked = photo + token  # decoders stop at the JPEG's end; the token rides along
    root = Path(tempfile.gettempdir())
    since = time.time() - 1
    found: list[Path] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            found.extend(photo_files(root, since, token)[0])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for index in range(10):
                if index % 2:
                    response = client.post("/toonify", files={"image": ("a.jpg", marked)})
                else:
                    response = client.post("/toonify", content=marked)
                assert response.status_code == 200, response.text
    finally:
        stop.set()
        poller.join()
    holding, folders = photo_files(root, since, token)
    assert not found and not holding, found + holding
    assert not folders, folders  # nothing of a request is left behind
