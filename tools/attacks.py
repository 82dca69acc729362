"""Cheap attacks from one address, and a normal user beside them, for tests and benchmarks.

The attacker binds to ``ATTACKER`` (127.0.0.2) and the normal user to 127.0.0.1, so the instance
sees two client addresses on one machine. Every attack runs until its ``stop`` event is set.
"""

from __future__ import annotations

import re
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

ATTACKER = "127.0.0.2"
Attack = Callable[[threading.Event], None]  # runs until its event is set


def attacker_addresses(count: int) -> list[str]:
    """``count`` more loopback addresses (127.0.1.1 on), for attacks from many addresses."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def attacker_socket(
    url: str, receive_buffer: int | None = None, address: str = ATTACKER
) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((address, 0))
    sock.settimeout(30)
    sock.connect((host, int(port)))
    return sock


def attacking(count: int, *attacks: Attack) -> tuple[threading.Event, list]:
    """``count`` threads running each ``attack(stop)``; set ``stop`` to end them."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=attack, args=(stop,), daemon=True)
        for attack in attacks
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    return stop, threads


def stalled_upload(url: str, address: str = ATTACKER) -> Attack:
    """Headers announcing 100 KB, then nothing; reconnect as soon as the server cuts it off."""

    def stall(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with attacker_socket(url, address=address) as sock:
                    sock.sendall(
                        b"POST /toonify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                        b"Content-Length: 100000\r\n\r\n"
                    )
                    sock.recv(4096)  # until the server cuts it off
            except OSError:
                pass

    return stall


def junk_flood(url: str, statuses: list[int]) -> Attack:
    """5-byte bodies in a loop; each answer's status goes into ``statuses``."""

    def flood(stop: threading.Event) -> None:
        transport = httpx.HTTPTransport(local_address=ATTACKER)
        with httpx.Client(base_url=url, transport=transport, timeout=30) as client:
            while not stop.is_set():
                statuses.append(client.post("/toonify", content=b"junk!").status_code)

    return flood


def unread_answers(url: str, path: str, upload: bytes, count: int) -> list[socket.socket]:
    """``count`` requests sent in full whose answers are never read (a 4 KB receive buffer):
    close the sockets to end it."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(upload)}\r\n\r\n"
    ).encode() + upload
    sockets = []
    for _ in range(count):
        sock = attacker_socket(url, receive_buffer=4096)
        sock.sendall(request)
        sockets.append(sock)
    return sockets


@dataclass
class UserAnswer:
    status: int
    level: str | None
    server_s: float  # arrival to answer, measured by the server (Server-Timing "total")


def normal_user(url: str, photo: bytes, seconds: float) -> list[UserAnswer]:
    """One person's uploads from 127.0.0.1, one after another, for ``seconds``."""
    answers = []
    ends = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < ends:
            response = client.post("/toonify", content=photo)
            timing = response.headers.get("server-timing", "")
            total = re.search(r"(?:total|gateway);dur=([\d.]+)", timing)
            level = response.headers.get("x-service-level")
            seconds = float(total[1]) / 1000 if total else float("nan")
            answers.append(UserAnswer(response.status_code, level, seconds))
    return answers


def served_at_full_level(answers: list[UserAnswer]) -> float:
    """The share of answers that were a toon at the full level."""
    full = [a for a in answers if a.status == 200 and a.level == "full"]
    return len(full) / len(answers) if answers else 0.0


def median_server_s(answers: list[UserAnswer]) -> float:
    served = [a.server_s for a in answers if a.status == 200]
    return statistics.median(served) if served else float("nan")
