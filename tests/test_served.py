"""A real `bentoml serve` of the three services, driven over real HTTP."""

from __future__ import annotations

import base64
import io
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import asset, insightface_image

MAX_BYTES = 4 * 1024 * 1024


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(serve, default_models):
    return serve(preprocess_workers=2, max_bytes=MAX_BYTES, max_batch_size=8)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def test_multipart_upload_returns_a_toon_of_the_requested_format_and_size(client, astronaut):
    for fmt, size in [("jpeg", None), ("png", 256), ("webp", 384)]:
        params = {"format": fmt, **({"size": size} if size else {})}
        response = client.post(
            "/toonify", files={"image": ("a.png", encoded(astronaut))}, data=params
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == f"image/{fmt}"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == fmt.upper() and image.size == (size or 512,) * 2
        assert response.headers["x-num-faces"] == "1"
        assert "detect;dur=" in response.headers["server-timing"]


def test_raw_body_and_the_face_region_changes(client, astronaut):
    response = client.post("/toonify?return_aligned=true&format=png", content=encoded(astronaut))
    assert response.status_code == 200
    sheet = np.asarray(Image.open(io.BytesIO(response.content)), dtype=float)
    assert sheet.shape == (1024, 512, 3)  # the toon above the aligned photo crop
    toon, aligned = sheet[:512], sheet[512:]
    face = (slice(150, 400), slice(130, 380))  # eyes to chin in an FFHQ crop
    assert np.abs(toon[face] - aligned[face]).mean() > 10
    assert aligned[face].std() > 20  # the aligned half is a real photo of a face


def test_json_variant(client, astronaut):
    response = client.post("/toonify?response=json", content=encoded(astronaut, "JPEG"))
    body = response.json()
    assert body["num_faces"] == 1 and len(body["faces"][0]["landmarks"]) == 5
    assert set(body["timings_ms"]) >= {"decode", "orient", "detect", "align", "generate", "encode"}
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).size == (512, 512)


def truncated_jpeg(image: Image.Image) -> bytes:
    data = encoded(image, "JPEG", quality=90)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("make_body", "status", "code"),
    [
        (lambda a: b"", 400, "not_an_image"),
        (lambda a: b"just some text, not a photo", 400, "not_an_image"),
        (truncated_jpeg, 400, "corrupt_image"),
        (lambda a: encoded(a, "TGA"), 415, "unsupported_format"),
        (lambda a: np.random.default_rng(0).bytes(MAX_BYTES + 1), 413, "too_large"),
        (lambda a: encoded(Image.new("RGB", (300, 200), "grey")), 422, "no_face"),
    ],
    ids=["empty", "text", "truncated", "tga", "too-large", "no-face"],
)
def test_user_errors_get_their_status_and_a_json_body(client, astronaut, make_body, status, code):
    response = client.post("/toonify", content=make_body(astronaut))
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code and len(body["detail"]) > 10
    if code == "no_face":
        assert body["num_faces"] == 0


def test_option_errors(client, astronaut):
    data = encoded(astronaut)
    response = client.post("/toonify?face_index=3", content=data)
    assert response.status_code == 422 and response.json()["num_faces"] == 1
    assert client.post("/toonify?format=gif", content=data).status_code == 400
    response = client.post("/toonify", files={"photo": ("a.png", data)})
    assert response.status_code == 400 and response.json()["error"] == "bad_option"


def test_bad_input_never_breaks_the_service(client, astronaut):
    rng = np.random.default_rng(3)
    original = encoded(astronaut.resize((128, 128)), "JPEG")
    for _ in range(20):
        damaged = bytearray(original)
        for position in rng.integers(0, len(damaged), 8):
            damaged[position] = rng.integers(0, 256)
        assert client.post("/toonify", content=bytes(damaged)).status_code < 500
    assert client.get("/readyz").status_code == 200
    assert client.post("/toonify", content=encoded(astronaut)).status_code == 200


def batch_sizes(metrics: str) -> tuple[float, float]:
    """Sum and count of the generator's adaptive batch size histogram."""
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("bentoml_service_adaptive_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("bentoml_service_adaptive_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def test_concurrent_requests_are_batched(client, server, astronaut):
    before = batch_sizes(client.get("/metrics").text)
    data = encoded(astronaut, "JPEG")

    def post(_: int) -> int:
        return httpx.post(f"{server.url}/toonify", content=data, timeout=120).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(16)))
    assert statuses == [200] * 16
    after = batch_sizes(client.get("/metrics").text)
    images, batches = after[0] - before[0], after[1] - before[1]
    assert images == 16
    assert batches < 16, f"{batches} batches for 16 images: no batch larger than 1"


def test_paste_back_returns_the_full_photo(client, t1_photo):
    data = insightface_image("t1.jpg").read_bytes()
    response = client.post("/toonify?paste_back=true&format=png", content=data)
    assert response.status_code == 200
    result = np.asarray(Image.open(io.BytesIO(response.content)), dtype=float)
    original = np.asarray(t1_photo, dtype=float)
    assert result.shape == original.shape
    boxes = [[int(v) for v in box] for box in eval_boxes(response.headers["x-face-boxes"])]
    assert len(boxes) >= 5
    for x1, y1, x2, y2 in boxes:
        assert np.abs(result[y1:y2, x1:x2] - original[y1:y2, x1:x2]).mean() > 8
    assert np.abs(result[:25] - original[:25]).mean() < 2  # the wall above the heads


def eval_boxes(header: str) -> list[list[float]]:
    return [[float(v) for v in re.findall(r"[-\d.]+", box)] for box in header.split("], [")]


@pytest.fixture(scope="module")
def learned_server(serve, learned_models):
    return serve(generator_model="animeganv3:latest", detector_model="scrfd-2.5g:latest")


def test_t1_all_faces_with_scrfd(learned_server):
    data = insightface_image("t1.jpg").read_bytes()
    response = httpx.post(f"{learned_server.url}/toonify?all_faces=true&size=128",
                          content=data, timeout=120)  # fmt: skip
    assert response.status_code == 200
    assert response.headers["x-num-faces"] == "6"
    assert Image.open(io.BytesIO(response.content)).size == (6 * 128, 128)


def test_learned_generator_gives_a_different_look(learned_server, server, astronaut):
    data = encoded(astronaut)
    learned = httpx.post(f"{learned_server.url}/toonify?format=png", content=data, timeout=120)
    default = httpx.post(f"{server.url}/toonify?format=png", content=data, timeout=120)
    learned_pixels = np.asarray(Image.open(io.BytesIO(learned.content)), dtype=float)
    default_pixels = np.asarray(Image.open(io.BytesIO(default.content)), dtype=float)
    assert learned_pixels.shape == default_pixels.shape == (512, 512, 3)
    assert np.abs(learned_pixels - default_pixels).mean() > 10
    asset("animeganv3_tiny_cute.onnx")


def test_overload_is_refused_fast_and_the_service_recovers(serve, default_models, astronaut):
    server = serve(max_in_flight=2, retry_after_s=3)
    data = encoded(astronaut, "JPEG")

    def post(_: int) -> tuple[int, float, str | None, dict]:
        response = httpx.post(f"{server.url}/toonify", content=data, timeout=120)
        body = response.json() if response.status_code != 200 else {}
        elapsed = response.elapsed.total_seconds()
        return response.status_code, elapsed, response.headers.get("retry-after"), body

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(post, range(12)))
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) + len(refused) == 12 and served and refused
    for _, elapsed, retry_after, body in refused:
        assert body["error"] == "overloaded" and retry_after == "3"
        assert elapsed < 0.1
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'toonify_images_total{{outcome="rejected"}} {float(len(refused))}' in metrics
    assert post(0)[0] == 200  # load gone, service fine
