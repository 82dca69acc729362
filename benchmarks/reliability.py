"""What an outside tester throws at the service, against real served instances; docs/reliability.md.

    python -m benchmarks.reliability hostile        # >= 100 kinds of bad upload and request
    python -m benchmarks.reliability fuzz [--bodies 10000]
    python -m benchmarks.reliability kill           # workers killed under load
    python -m benchmarks.reliability sigterm        # SIGTERM under load
    python -m benchmarks.reliability memory [--requests 2000]   # faces, none, junk, cancelled
    python -m benchmarks.reliability internal [--tree DIR] [--uploads 1000]

Each starts its own `bentoml serve` (of this tree, or --tree), prints what it saw and a verdict.
The overload run is the load test's: `python -m loadtest overload --start --rate R`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import signal
import socket
import statistics
import struct
import tempfile
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A model store of its own, set before anything imports bentoml.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="toonify-reliability-")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from loadtest.photos import build_pool, choose, no_face_photo  # noqa: E402
from model_store.build import build_defaults  # noqa: E402
from tools.machine import describe_cpu  # noqa: E402
from tools.served import Served, hammering  # noqa: E402

ASTRONAUT = Image.fromarray(skimage.data.astronaut())
DEADLINE_S = 120.0


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def start(tree: Path = ROOT, **settings) -> Served:
    env = {f"TOONIFY_{k.upper()}": str(v) for k, v in settings.items()}
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree)
    return Served(env, Path(tempfile.mkdtemp()) / "serve.log", cwd=tree)


# --- hostile inputs -------------------------------------------------------------------------


def multipart(*parts: bytes, boundary: bytes = b"B0und") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary + b"--\r\n"


def file_part(data: bytes, name: str = "image", filename: str = "a.jpg", kind: str = "image/jpeg"):
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {kind}\r\n\r\n"
    ).encode() + data


def text_part(name: str, value: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()


def hostile_requests() -> dict[str, dict]:
    """Name -> httpx.request keyword arguments. Every one must get an answer under 500."""
    small = ASTRONAUT.resize((256, 256))  # the face is still found: the pipeline runs through
    jpeg, png = encode(small, "JPEG", quality=90), encode(small, "PNG")
    kinds: dict[str, dict] = {}

    def raw(name: str, data: bytes, **extra) -> None:
        kinds[name] = {"method": "POST", "url": "/toonify", "content": data, **extra}

    for fmt in (
        "JPEG",
        "PNG",
        "WEBP",
        "GIF",
        "BMP",
        "TIFF",
        "TGA",
        "ICO",
        "PPM",
        "PCX",
        "SGI",
        "IM",
        "JPEG2000",
        "XBM",
        "PDF",
        "DIB",
        "QOI",
    ):
        image = small.convert("1") if fmt == "XBM" else small
        try:
            raw(f"format {fmt}", encode(image, fmt))
        except (KeyError, OSError, ValueError):
            pass
    for mode in (
        "1",
        "L",
        "LA",
        "P",
        "PA",
        "RGBA",
        "CMYK",
        "I;16",
        "I",
        "F",
        "YCbCr",
        "LAB",
        "HSV",
        "RGBX",
    ):
        image = (
            small.convert(mode)
            if mode not in ("I;16", "I", "F")
            else small.convert("L").convert(mode)
        )
        for fmt in ("PNG", "TIFF"):
            try:
                raw(f"mode {mode} as {fmt}", encode(image, fmt))
                break
            except (OSError, ValueError, KeyError):
                continue
    for size in ((1, 1), (1, 8000), (8000, 1), (16, 16), (2, 3)):
        raw(f"{size[0]}x{size[1]} pixels", encode(ASTRONAUT.resize(size), "PNG"))
    raw(
        "9000x9000 (81 MP) JPEG", encode(Image.new("RGB", (9000, 9000), "grey"), "JPEG", quality=20)
    )
    raw("PNG bomb 30000x30000", png_header_bomb(30000, 30000))
    raw("PNG bomb 65535x1", png_header_bomb(65535, 1))
    for value in (0, 9, 255, 65535):
        exif = Image.Exif()
        exif[0x0112] = value
        raw(f"EXIF orientation {value}", encode(small, "JPEG", exif=exif.tobytes()))
    raw("EXIF block of garbage", encode(small, "JPEG", exif=b"Exif\x00\x00" + os.urandom(200)))
    raw(
        "EXIF with 60000 IFD entries",
        encode(small, "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x60\xea" + b"\x00" * 64),
    )
    for fraction in (0.02, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.98, 0.999):
        raw(f"JPEG truncated at {fraction:.0%}", jpeg[: int(len(jpeg) * fraction)])
    for fraction in (0.05, 0.3, 0.6, 0.9, 0.99):
        raw(f"PNG truncated at {fraction:.0%}", png[: int(len(png) * fraction)])
    sos = jpeg.index(b"\xff\xda")
    raw(
        "JPEG with scrambled entropy data",
        jpeg[: sos + 20] + os.urandom(len(jpeg) - sos - 22) + b"\xff\xd9",
    )
    raw("PNG with a bad CRC", png[:33] + b"\x00\x00\x00\x00" + png[37:])
    idat = png.index(b"IDAT")
    raw("PNG with bad zlib data", png[: idat + 4] + os.urandom(64) + png[idat + 68 :])
    gif = encode(small.convert("P"), "GIF")
    raw("GIF with bad LZW data", gif[:800] + os.urandom(200) + gif[1000:])
    webp = encode(small, "WEBP")
    raw("WebP with a bad VP8 chunk", webp[:30] + os.urandom(len(webp) - 30))
    for name, data in {
        "empty": b"",
        "one byte": b"\xff",
        "16 random bytes": os.urandom(16),
        "1 MB of random bytes": os.urandom(1 << 20),
        "HTML": b"<html><body>hi</body></html>",
        "JSON": b'{"image": "http://example.com/a.jpg"}',
        "SVG": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        "PDF header": b"%PDF-1.7\n" + os.urandom(100),
        "ZIP": b"PK\x03\x04" + os.urandom(100),
        "ELF": b"\x7fELF" + os.urandom(100),
        "MP4": b"\x00\x00\x00\x18ftypmp42" + os.urandom(100),
        "HEIC box, no picture": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
        + os.urandom(64),
        "gzip of a JPEG": gzip.compress(jpeg),
        "JPEG magic then nothing": b"\xff\xd8\xff\xe0",
        "JPEG twice in one body": jpeg + jpeg,
    }.items():
        raw(name, data)
    frames = [Image.new("P", (64, 64), i % 255) for i in range(500)]
    raw("GIF with 500 frames", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    raw("APNG with 100 frames", encode(small, "PNG", save_all=True, append_images=[small] * 99))
    raw("animated WebP", encode(small, "WEBP", save_all=True, append_images=[small] * 20))
    raw("JPEG with a garbage ICC profile", encode(small, "JPEG", icc_profile=os.urandom(4000)))
    raw(
        "CMYK JPEG with a garbage ICC profile",
        encode(small.convert("CMYK"), "JPEG", icc_profile=os.urandom(500)),
    )
    raw("MPO from a phone", encode(small, "MPO", save_all=True, append_images=[small]))
    raw("progressive JPEG", encode(small, "JPEG", progressive=True))
    raw(
        "16-bit grey PNG",
        encode(Image.fromarray((np.arange(4096, dtype=np.uint16) * 16).reshape(64, 64)), "PNG"),
    )

    def form(name: str, body: bytes, boundary: str = "B0und") -> None:
        kinds[name] = {
            "method": "POST",
            "url": "/toonify",
            "content": body,
            "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
        }

    form("multipart: two photos", multipart(file_part(jpeg), file_part(jpeg)))
    form(
        "multipart: a 1.1 MB text field",
        multipart(file_part(jpeg), text_part("format", "x" * 1_100_000)),
    )
    form(
        "multipart: 17 fields",
        multipart(file_part(jpeg), *[text_part(f"f{i}", "1") for i in range(17)]),
    )
    form("multipart: a part without a name", multipart(b"Content-Disposition: form-data\r\n\r\nxx"))
    form(
        "multipart: a link for the photo", multipart(text_part("image", "http://169.254.169.254/"))
    )
    form("multipart: no end", b"--B0und\r\n" + file_part(jpeg))
    form("multipart: empty", b"")
    form("multipart: the photo part is empty", multipart(file_part(b"")))
    form("multipart: photo under another name", multipart(file_part(jpeg, name="photo")))
    form(
        "multipart: a path as the filename",
        multipart(file_part(jpeg, filename="../../../etc/passwd")),
    )
    form("multipart: a 2000-character filename", multipart(file_part(jpeg, filename="a" * 2000)))
    form("multipart: a unicode filename", multipart(file_part(jpeg, filename="фото 😀.jpg")))
    form("multipart: the photo labelled text/plain", multipart(file_part(jpeg, kind="text/plain")))
    form(
        "multipart: an option twice",
        multipart(file_part(jpeg), text_part("size", "64"), text_part("size", "65")),
    )
    form("multipart: an unknown option", multipart(file_part(jpeg), text_part("colour", "red")))
    form(
        "multipart: a 70-character boundary",
        multipart(file_part(jpeg), boundary=b"b" * 70),
        "b" * 70,
    )
    kinds["multipart: no boundary"] = {
        "method": "POST",
        "url": "/toonify",
        "content": jpeg,
        "headers": {"content-type": "multipart/form-data"},
    }
    for query in (
        "size=-1",
        "size=0",
        "size=1000000000",
        "size=abc",
        "face_index=-5",
        "face_index=100000000000000000000",
        "format=../../etc/passwd",
        "format=gif",
        "quality=NaN",
        "quality=101",
        "response=<script>",
        "all_faces=maybe",
        "paste_back=2",
        "colour=red",
        "size=1e3",
        "format=null",
        "&".join(f"p{i}=1" for i in range(1000)),
        "format=" + "j" * 5000,
    ):
        raw(f"option {query[:40]}", jpeg, url=f"/toonify?{query}")
    raw("Content-Type with garbage", jpeg, headers={"content-type": "image/jpeg; \x01\x02=="})
    raw("chunked upload", iter([jpeg[:1000], jpeg[1000:]]))
    raw("Expect: 100-continue", jpeg, headers={"expect": "100-continue"})
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
        kinds[f"{method} /toonify"] = {"method": method, "url": "/toonify"}
    for path in (
        "/../../etc/passwd",
        "/static/../service.py",
        "/toonify/",
        "/toonify/raw",
        "/docs.json?x=" + "y" * 4000,
        "/" + "a" * 8000,
        "/%00",
        "/metrics/../readyz",
    ):
        kinds[f"GET {path[:40]}"] = {"method": "GET", "url": path}
    return kinds


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge picture, and a tiny compressed body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * min(width * height + height, 50_000_000), 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def hostile(args) -> None:
    server = start()
    kinds = hostile_requests()
    answers = {}
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE_S + 10) as client:
            for name, request in kinds.items():
                response = client.request(**request)
                answers[name] = (
                    response.status_code,
                    response.json().get("error") if response.status_code >= 400 else "",
                )
            healthy = client.post("/toonify", content=encode(ASTRONAUT, "JPEG")).status_code
    finally:
        server.stop()
    for name, (status, code) in answers.items():
        print(f"| {name} | {status} | {code} |")
    statuses = Counter(status for status, _ in answers.values())
    server_errors = [name for name, (status, _) in answers.items() if status >= 500]
    print(
        f"\n{len(kinds)} kinds; statuses {dict(sorted(statuses.items()))}; "
        f"5xx: {server_errors or 0}; a good photo afterwards: {healthy}"
    )


# --- fuzzed bodies ----------------------------------------------------------------------------


def mutate(seed: bytes, rng: random.Random) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        at = rng.randrange(len(data)) if data else 0
        if kind < 0.5 and data:
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind < 0.65:
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind < 0.8 and data:
            del data[at : at + rng.randint(1, 256)]
        elif kind < 0.9:
            data = data[: rng.randint(0, len(data))]
        else:
            data[at:at] = data[rng.randrange(len(data) or 1) :][: rng.randint(1, 512)]
    return bytes(data)


def fuzz(args) -> None:
    rng = random.Random(11)
    small = ASTRONAUT.resize((96, 96))
    seeds = [encode(small, fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")]
    forms = [multipart(file_part(seed), text_part("size", "64")) for seed in seeds[:2]]
    server = start()
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        local = random.Random(index)
        if index % 4 == 3:
            body = mutate(local.choice(forms), local)
            headers = {"content-type": "multipart/form-data; boundary=B0und"}
        else:
            body, headers = mutate(local.choice(seeds), local), {}
        started = time.monotonic()
        try:
            status = httpx.post(
                f"{server.url}/toonify?size=64",
                content=body,
                headers=headers,
                timeout=DEADLINE_S + 10,
            ).status_code
        except httpx.HTTPError:
            status = 0
        with lock:
            results.append((status, time.monotonic() - started))

    rng.shuffle(seeds)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(args.bodies)))
    finally:
        server.stop()
    statuses = Counter(status for status, _ in results)
    latencies = [seconds for _, seconds in results]
    print(
        f"{len(results)} fuzzed bodies in {time.monotonic() - started:.0f} s; statuses "
        f"{dict(sorted(statuses.items()))}; 5xx or no answer: "
        f"{sum(n for s, n in statuses.items() if s >= 500 or s == 0)}; over the {DEADLINE_S:.0f} s "
        f"deadline: {sum(1 for s in latencies if s > DEADLINE_S)}; slowest {max(latencies):.2f} s, "
        f"median {statistics.median(latencies) * 1000:.0f} ms"
    )


# --- workers killed, SIGTERM ---------------------------------------------------------------------


def worker_pid(server: Served, service: str) -> int:
    for process in psutil.Process(server.process.pid).children(recursive=True):
        arguments = process.cmdline()
        if (
            "--service-name" in arguments
            and arguments[arguments.index("--service-name") + 1] == service
        ):
            return process.pid
    raise SystemExit(f"no {service} worker")


class Load:
    """``clients`` loops posting photos from the load test's pool until stopped."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.records, self.stop = url, [], threading.Event()
        self.pool = [u for u in build_pool() if u.has_face]
        self.threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def loop(self, index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=self.url, timeout=DEADLINE_S + 10) as client:
            while not self.stop.is_set():
                upload = rng.choice(self.pool)
                sent = time.monotonic()
                try:
                    response = client.post("/toonify", content=upload.data)
                    record = (
                        sent,
                        time.monotonic() - sent,
                        response.status_code,
                        response.headers.get("retry-after"),
                        response.json().get("error") if response.status_code != 200 else "",
                    )
                except httpx.HTTPError as exc:
                    record = (sent, time.monotonic() - sent, 0, None, type(exc).__name__)
                self.records.append(record)

    def finish(self) -> list:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        return self.records


def kill(args) -> None:
    server = start()
    load = Load(server.url, 4)
    try:
        time.sleep(15)
        killed_at = {}
        for service in ("toonify-preprocess", "toonify-generator"):
            killed_at[service] = time.monotonic()
            os.kill(worker_pid(server, service), signal.SIGKILL)
            time.sleep(20)
        records = load.finish()
    finally:
        server.stop()
    statuses = Counter((status, code) for _, _, status, _, code in records)
    unanswered_503 = [r for r in records if r[2] == 503 and not r[3]]
    print(
        f"{len(records)} requests under load, preprocessing worker killed at 15 s, generator at "
        f"35 s; answers {dict(statuses)}; 500s {sum(1 for r in records if r[2] == 500)}; 503s "
        f"without Retry-After {len(unanswered_503)}; "
        f"no answer {sum(1 for r in records if r[2] == 0)}; "
        f"slowest {max(r[1] for r in records):.1f} s (deadline {DEADLINE_S:.0f} s)"
    )


def sigterm(args) -> None:
    server = start()
    load = Load(server.url, 6)
    time.sleep(10)
    signalled = time.monotonic()
    os.killpg(server.process.pid, signal.SIGTERM)
    load.stop.set()  # no new requests after the signal: the balancer has stopped sending
    records = load.finish()
    server.process.wait(timeout=DEADLINE_S + 30)
    exited = time.monotonic() - signalled
    in_flight = [r for r in records if r[0] < signalled < r[0] + r[1]]
    dropped = [r for r in in_flight if r[2] != 200]
    print(
        f"{len(records)} requests; {len(in_flight)} in flight at SIGTERM, of which dropped: "
        f"{len(dropped)} {dropped}; the instance exited {exited:.1f} s after the signal"
    )


# --- memory over many requests -----------------------------------------------------------------


def rss_by_service(server: Served) -> dict[str, float]:
    sizes: dict[str, float] = {}
    for process in psutil.Process(server.process.pid).children(recursive=True):
        line = " ".join(process.cmdline())
        name = (
            line.split("--service-name ")[1].split()[0] if "--service-name" in line else "arbiter"
        )
        sizes[name] = sizes.get(name, 0.0) + process.memory_info().rss / 2**20
    sizes["arbiter"] = psutil.Process(server.process.pid).memory_info().rss / 2**20
    return sizes


def cancelled_upload(url: str, data: bytes, path: str = "/toonify") -> int:
    """Half of the photo, then the connection closed: the upload is abandoned (status 0)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        sock.sendall(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data[: len(data) // 2])
    return 0


def walked_away(client: httpx.Client, data: bytes) -> int:
    """The whole photo, then gone before the answer: the work in flight is abandoned."""
    try:
        client.post("/toonify", content=data, timeout=0.2)
    except httpx.TimeoutException:
        return 0
    return 200


def memory(args) -> None:
    server = start()
    pool, rng = build_pool(), random.Random(3)
    no_face = [no_face_photo("JPEG"), no_face_photo("PNG")]
    bad = [b"not a photo", encode(ASTRONAUT, "JPEG")[:5000]]
    kinds = ["mix", "no_face", "bad", "cancelled", "walked_away"]
    plan = [rng.choices(kinds, weights=[70, 12, 6, 6, 6])[0] for _ in range(args.requests)]
    jobs = [(kind, choose(pool, rng)) for kind in plan]
    samples, statuses = [], Counter()
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE_S + 10) as client:

            def post(job) -> int:
                kind, (upload, options) = job
                if kind == "no_face":
                    return client.post("/toonify", content=rng.choice(no_face)).status_code
                if kind == "bad":
                    return client.post("/toonify", content=rng.choice(bad)).status_code
                if kind == "cancelled":
                    return cancelled_upload(server.url, upload.data)
                if kind == "walked_away":
                    return walked_away(client, upload.data)
                return client.post("/toonify", params=options, content=upload.data).status_code

            step = max(1, args.requests // 10)
            with ThreadPoolExecutor(4) as pool_:
                for done in range(0, args.requests, step):
                    statuses.update(pool_.map(post, jobs[done : done + step]))
                    samples.append((done + step, rss_by_service(server)))
                    print(done + step, {k: round(v) for k, v in samples[-1][1].items()}, flush=True)
    finally:
        server.stop()
    # Growth after warm-up: the least-squares slope of each process's RSS over the samples from
    # the fifth of the run on (single samples move by tens of MB as big photos come and go).
    warm = [s for s in samples if s[0] > args.requests // 5]
    counts = np.array([count for count, _ in warm], dtype=float)
    report = []
    for name in warm[0][1]:
        sizes = np.array([sizes[name] for _, sizes in warm])
        slope = np.polyfit(counts / 1000, sizes, 1)[0]
        report.append(
            f"{name} {sizes[0]:.0f} -> {sizes[-1]:.0f} MB (peak {sizes.max():.0f}; "
            f"{slope:+.1f} MB per 1000)"
        )
    print(
        f"\n{args.requests} requests ({dict(Counter(plan))}; answers {dict(statuses)}, 0 = "
        f"abandoned by the client); RSS from {warm[0][0]} to {warm[-1][0]} requests: "
        + "; ".join(report)
    )


# --- the calls between services ------------------------------------------------------------------


def internal(args) -> None:
    tree = (args.tree or ROOT).resolve()
    server = start(tree)
    photo = encode(ASTRONAUT.resize((256, 256)), "JPEG")
    started = time.monotonic()
    try:
        client = httpx.Client(base_url=server.url, timeout=DEADLINE_S + 10)
        with hammering(server.url), client:

            def post(_: int) -> tuple[int, float]:
                begin = time.monotonic()
                try:
                    return client.post(
                        "/toonify", content=photo
                    ).status_code, time.monotonic() - begin
                except httpx.HTTPError:
                    return 0, time.monotonic() - begin

            with ThreadPoolExecutor(3) as pool:
                results = list(pool.map(post, range(args.uploads)))
    finally:
        server.stop()
    log = server.log.read_text()
    retries = log.count("call to another service failed") + log.count("retrying once")
    statuses = Counter(status for status, _ in results)
    print(
        f"{tree}: {args.uploads} uploads in {time.monotonic() - started:.0f} s with /readyz and "
        f"/metrics polled in a tight loop; answers {dict(statuses)}; internal calls that failed "
        f"and were retried: {retries}; slowest {max(s for _, s in results):.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", choices=["hostile", "fuzz", "kill", "sigterm", "memory", "internal"])
    parser.add_argument("--bodies", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--uploads", type=int, default=1_000)
    parser.add_argument("--tree", type=Path, help="internal: another source tree to compare")
    args = parser.parse_args()
    print(describe_cpu(), flush=True)
    build_defaults()
    globals()[args.run](args)


if __name__ == "__main__":
    main()
