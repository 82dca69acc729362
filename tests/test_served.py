"""A real `bentoml serve` of the three services, driven over real HTTP."""

from __future__ import annotations

import base64
import io
import itertools
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image

from tools.served import free_port, scrape

from .conftest import ROOT, asset, insightface_image
from .metadata import marks_in, with_every_metadata

MAX_BYTES = 4 * 1024 * 1024


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(serve, default_models):
    return serve(max_bytes=MAX_BYTES, max_batch_size=8)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


# --- the typed API: document, Python client, curl forms ---------------------------------------


def test_docs_json_describes_the_photo_and_every_option(client):
    spec = client.get("/docs.json").json()
    operation = spec["paths"]["/toonify"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = form["properties"]
    assert form["required"] == ["image"] and fields["image"]["format"] == "binary"
    assert fields["size"]["minimum"] == 16 and fields["size"]["maximum"] == 4096
    assert fields["quality"]["minimum"] == 1 and fields["quality"]["maximum"] == 100
    assert fields["face_index"]["minimum"] == 0
    for flag in ("all_faces", "paste_back", "return_aligned"):
        assert fields[flag]["type"] == "boolean" and fields[flag]["default"] is False
    enums = {
        name: spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["enum"]
        for name in ("format", "response")
        for ref in [fields[name]["$ref"]]
    }
    assert enums == {"format": ["jpeg", "png", "webp"], "response": ["image", "json"]}
    # The raw-body form at /toonify/raw (the photo as the body, options in the query, never
    # both forms of options on one operation), the JSON answer and every documented error.
    raw = spec["paths"]["/toonify/raw"]["post"]
    assert set(raw["requestBody"]["content"]) == {"image/*"}
    assert [p["name"] for p in operation["parameters"]] == ["Prefer"]  # a header, no option
    options = {p["name"] for p in raw["parameters"] if p["in"] == "query"}
    assert options == set(fields) - {"image"}
    # With Prefer, the same upload put in line (job_desk.py): 202 with the job.
    for each in (operation, raw):
        assert "Location" in each["responses"]["202"]["headers"]
    assert "/toonify/json/raw" in spec["paths"]
    assert set(operation["responses"]["200"]["content"]) == {"image/*", "application/json"}
    assert set(operation["responses"]) >= {"400", "408", "413", "415", "422", "500", "503", "504"}
    assert "no_face" in operation["responses"]["422"]["description"]
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert client.get("/docs").status_code == 200  # BentoML's Swagger UI, reading the above


def test_bentoml_client_calls_the_typed_api(server, tmp_path, astronaut):
    photo = tmp_path / "astronaut.png"
    astronaut.save(photo)
    t1 = insightface_image("t1.jpg")
    with bentoml.SyncHTTPClient(server.url, timeout=120) as bento:
        one = Image.open(bento.toonify(image=photo))
        every = Image.open(bento.toonify(image=t1, all_faces=True, size=128, format="png"))
        whole = Image.open(bento.toonify(image=t1, paste_back=True))
        answer = Path(bento.toonify(image=photo, response="json")).read_text()
        data = bento.toonify_json(image=photo, format="png")  # JSON as data, not a file
        with pytest.raises(bentoml.exceptions.BentoMLException) as refused:
            bento.toonify(image=photo, size=9999)
    assert one.size == (512, 512)
    assert every.format == "PNG" and every.size[1] == 128 and every.size[0] >= 5 * 128
    assert whole.size == Image.open(t1).size
    assert '"num_faces":1' in answer
    assert data["num_faces"] == 1 and data["image_type"] == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(data["image"]))).format == "PNG"
    assert refused.value.error_code == 400 and "bad_option" in refused.value.message


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


@pytest.mark.parametrize("path", ["/toonify?response=json", "/toonify/json"])
def test_json_variant(client, astronaut, path):
    response = client.post(path, content=encoded(astronaut, "JPEG"))
    assert (
        response.headers["x-service-level"] == "full"
        and "detect;dur=" in response.headers["server-timing"]
    )
    body = response.json()
    assert body["num_faces"] == 1 and len(body["faces"][0]["landmarks"]) == 5
    assert set(body["timings_ms"]) >= {"decode", "orient", "detect", "align", "generate", "encode"}
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).size == (512, 512)


def test_server_timing_reports_each_stage_once(client, astronaut):
    response = client.post("/toonify?paste_back=true", content=encoded(astronaut, "JPEG"))
    stages = re.findall(r"(\w+);dur=", response.headers["server-timing"])
    assert stages == [
        "decode",
        "orient",
        "detect",
        "align",
        "generator_queue",
        "generate",
        "paste_back",
        "encode",
        "total",  # the gateway's: arrival to answer, queues included
    ]


# --- the documented error table ----------------------------------------------------------------


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
    for send in ("raw", "multipart"):
        body = make_body(astronaut)
        if send == "raw":
            response = client.post("/toonify", content=body)
        else:
            response = client.post("/toonify", files={"image": ("photo", body)})
        assert response.status_code == status, (send, response.text)
        answer = response.json()
        assert answer["error"] == code and len(answer["detail"]) > 10
        if code == "no_face":
            assert answer["num_faces"] == 0


def test_option_errors(client, astronaut):
    data = encoded(astronaut)
    response = client.post("/toonify?face_index=3", content=data)
    assert response.status_code == 422 and response.json()["num_faces"] == 1
    for bad in ("format=gif", "size=9999", "quality=0", "colour=red", "size=1&size=2"):
        response = client.post(f"/toonify?{bad}", content=data)
        assert response.status_code == 400 and response.json()["error"] == "bad_option", bad
    response = client.post("/toonify", files={"photo": ("a.png", data)})
    assert response.status_code == 400 and "'image'" in response.json()["detail"]


def headers_only(url: str, path: str, length: int) -> tuple[bytes, float]:
    """Send a POST's headers and no body; the answer, and how long it took."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
            re.search(rb"content-length: (\d+)", answer, re.I).group(1)
            if b"\r\n\r\n" in answer
            else 1
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started


def test_oversized_content_length_is_refused_before_the_body(server):
    answer, _ = headers_only(server.url, "/toonify", 50 * MAX_BYTES)
    # 413 from the header alone: waiting for 200 MB that never come would end in a 408.
    assert answer.startswith(b"HTTP/1.1 413") and b'"too_large"' in answer


def test_overload_is_refused_before_the_body(serve, default_models):
    full = serve(max_in_flight=0, retry_after_s=3)  # every processing slot taken
    answer, _ = headers_only(full.url, "/toonify", 1_000_000)
    # 503 from the header alone: a body awaited in vain would end in a 408.
    assert answer.startswith(b"HTTP/1.1 503") and b'"overloaded"' in answer
    assert b"retry-after: 3" in answer.lower()


def fixed_batch_generator(path: Path) -> Path:
    """A generator whose graph only works one crop at a time although its input says any batch:
    the kind of export bug an import check with one crop does not catch."""
    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["shape"],
            value=helper.make_tensor("s", TensorProto.INT64, [4], [1, 3, 512, 512]),
        ),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    image = ["N", 3, 512, 512]
    graph = helper.make_graph(
        nodes,
        "one-at-a-time",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, image)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, image)],
    )
    import onnx

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_our_own_bug_is_a_500_not_a_retry(serve, default_models, tmp_path):
    from model_store.build import import_generator
    from toonify.generation.signature import GeneratorSignature

    import_generator(
        fixed_batch_generator(tmp_path / "m.onnx"), "one-at-a-time", GeneratorSignature(), "test"
    )
    buggy = serve(generator_model="one-at-a-time:latest", backend="onnxruntime")
    t1 = insightface_image("t1.jpg").read_bytes()
    response = httpx.post(f"{buggy.url}/toonify?all_faces=true", content=t1, timeout=120)
    assert response.status_code == 500 and "retry-after" not in response.headers
    assert response.json()["error"] == "internal"
    one = httpx.post(f"{buggy.url}/toonify", content=t1, timeout=120)
    assert one.status_code == 200  # the instance itself is fine


def test_unknown_paths_and_methods_answer_in_json(client):
    missing = client.get("/wp-login.php")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.get("/toonify")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


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


# --- one trip per photo --------------------------------------------------------------------------


def test_every_request_decodes_its_photo_once(client, server):
    t1 = insightface_image("t1.jpg").read_bytes()
    flags = ("paste_back", "all_faces", "return_aligned")
    for values in itertools.product([False, True], repeat=3):
        for response_kind in ("image", "json"):
            params = {flag: str(v).lower() for flag, v in zip(flags, values, strict=True)}
            params["response"] = response_kind
            before = scrape(server.url)['toonify_stage_seconds_count{stage="decode"}']
            answer = client.post("/toonify", params=params, content=t1)
            assert answer.status_code == 200, answer.text
            after = scrape(server.url)['toonify_stage_seconds_count{stage="decode"}']
            assert after - before == 1, params


def test_concurrent_requests_are_batched(client, server, astronaut):
    before = scrape(server.url)
    data = encoded(astronaut, "JPEG")

    def post(_: int) -> int:
        return httpx.post(f"{server.url}/toonify", content=data, timeout=120).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(16)))
    assert statuses == [200] * 16
    after = scrape(server.url)
    crops = after["toonify_generator_batch_size_sum"] - before["toonify_generator_batch_size_sum"]
    batches = (
        after["toonify_generator_batch_size_count"] - before["toonify_generator_batch_size_count"]
    )
    assert crops == 16
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


# --- real weights --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learned_server(serve, learned_models):
    return serve(generator_model="animeganv3:latest", detector_model="scrfd-2.5g:latest")


def test_t1_all_faces_with_scrfd(learned_server):
    data = insightface_image("t1.jpg").read_bytes()
    response = httpx.post(
        f"{learned_server.url}/toonify?all_faces=true&size=128", content=data, timeout=120
    )
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


# --- overload ------------------------------------------------------------------------------------


def test_overload_is_refused_fast_and_the_service_recovers(serve, default_models, astronaut):
    server = serve(max_in_flight=2, retry_after_s=3)
    data = encoded(astronaut, "JPEG")

    def post(_: int) -> tuple[int, float, str | None, dict]:
        response = httpx.post(f"{server.url}/toonify", content=data, timeout=120)
        body = response.json() if response.status_code != 200 else {}
        # Measured by the server: the gateway's own time for a refusal, arrival to answer for a
        # toon.
        timing = response.headers.get("server-timing", "")
        server_ms = float(re.search(r"(?:gateway|total);dur=([\d.]+)", timing)[1])
        return response.status_code, server_ms, response.headers.get("retry-after"), body

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(post, range(12)))
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) + len(refused) == 12 and served and refused
    quickest_toon_ms = min(server_ms for _, server_ms, _, _ in served)
    for _, server_ms, retry_after, body in refused:
        assert body["error"] == "overloaded" and retry_after == "3"
        # Refused at once, not after queueing: one that waited for either of the two slots
        # would wait for a toon. (A tighter bound would time the entry's event loop reaching a
        # refusal among twelve requests at once on busy cores: 5-27 ms here.)
        assert server_ms < quickest_toon_ms
    metrics = scrape(server.url)
    assert metrics['toonify_images_total{outcome="rejected"}'] == len(refused)
    assert post(0)[0] == 200  # load gone, service fine


# --- the degrade ladder ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phone_photo(astronaut) -> bytes:
    """A 12 MP phone JPEG: pasted back at full size, each takes seconds with others in flight."""
    from loadtest.photos import phone_jpeg

    return phone_jpeg(astronaut)


def staggered(url: str, data: bytes, count: int, gap_s: float = 0.15) -> list[httpx.Response]:
    """``count`` paste_back uploads, one every ``gap_s`` (so they arrive in order, all before the
    first is answered), answered in sending order."""

    def post(index: int) -> httpx.Response:
        time.sleep(index * gap_s)
        return httpx.post(f"{url}/toonify?paste_back=true", content=data, timeout=120)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, range(count)))


def level_of(response: httpx.Response) -> str:
    return response.headers.get("x-service-level") if response.status_code == 200 else "refused"


def test_a_saturated_instance_serves_reduced_images_before_it_refuses(
    serve, default_models, phone_photo
):
    """Past its bound (2 in flight) the instance serves at the reduced level, up to 4 in flight,
    and refuses only beyond; with TOONIFY_DEGRADE=off it refuses past 2. A reduced answer is the
    full-size photo with faces generated at 256."""
    ladder = serve(max_in_flight=2, degraded_max_in_flight=4, retry_after_s=3)
    answers = staggered(ladder.url, phone_photo, 7)
    levels = [level_of(r) for r in answers]
    assert levels[:4] == ["full", "full", "reduced", "reduced"], levels
    assert "refused" in levels[4:], levels
    upright = (4032, 3024)
    for response in answers:
        if response.status_code == 200:
            assert Image.open(io.BytesIO(response.content)).size == upright  # full size
            generated = {"full": "512", "reduced": "256"}[level_of(response)]
            assert response.headers["x-generated-size"] == generated
        else:
            assert response.status_code == 503 and response.headers["retry-after"] == "3"
            assert response.json()["error"] == "overloaded"
    metrics = scrape(ladder.url)
    for level in ("full", "reduced"):
        assert metrics[f'toonify_answered_images_total{{level="{level}"}}'] == levels.count(level)

    off = serve(max_in_flight=2, degraded_max_in_flight=4, retry_after_s=3, degrade="off")
    levels_off = [level_of(r) for r in staggered(off.url, phone_photo, 5)]
    assert levels_off[:2] == ["full", "full"] and levels_off[2:4] == ["refused"] * 2, levels_off
    assert scrape(off.url)['toonify_answered_images_total{level="reduced"}'] == 0


@pytest.fixture(scope="module")
def reduced_server(serve, default_models):
    """Every request is admitted past the full level's bound: each is served reduced."""
    return serve(max_in_flight=0, degraded_max_in_flight=2, max_receiving=4)


def reduced_in_process(data: bytes) -> bytes:
    """The reduced level's PNG answer for a photo, made here by the same parts the service
    runs (the stored detector and generator, the preprocessing worker's pipeline)."""
    from model_store import detector_spec, load_generator
    from preprocess import create_detector
    from toonify.levels import Level
    from toonify.model_tags import stored_detector
    from toonify.photos.worker import PhotoWork
    from toonify.schema import ToonifyOptions, Toons
    from toonify.settings import Settings

    detector = create_detector(
        detector_spec(bentoml.models.get(stored_detector(Settings().detector_model)))
    )
    generator = load_generator(bentoml.models.get("toon-filter:latest"))
    pipeline = PhotoWork(detector, Settings())
    options = ToonifyOptions(format="png")
    job = pipeline.prepare(data, options, Level.reduced)
    toons = Toons(
        pixels=generator(job.crops, job.features),
        queued_s=0,
        generate_s=0,
        batch_size=1,
        generated_size=job.crops.shape[1],
    )
    return pipeline.finish(job, toons, options).image


def test_the_reduced_level_answers_in_full_size_from_a_smaller_generation(
    reduced_server, server, astronaut
):
    data = encoded(astronaut)
    reduced = httpx.post(f"{reduced_server.url}/toonify?format=png", content=data, timeout=120)
    full = httpx.post(f"{server.url}/toonify?format=png", content=data, timeout=120)
    assert reduced.headers["x-service-level"] == "reduced"
    assert full.headers["x-service-level"] == "full"
    reduced_pixels = np.asarray(Image.open(io.BytesIO(reduced.content)), dtype=float)
    full_pixels = np.asarray(Image.open(io.BytesIO(full.content)), dtype=float)
    assert reduced_pixels.shape == full_pixels.shape == (512, 512, 3)
    assert np.abs(reduced_pixels - full_pixels).mean() > 1  # not the full level's toon
    # It is the pipeline's reduced level, in-process: aligned at 256, generated at 256 by the
    # stored model, scaled up into the 512 answer.
    expected = np.asarray(Image.open(io.BytesIO(reduced_in_process(data))), dtype=float)
    assert np.abs(reduced_pixels - expected).mean() < 0.5
    body = httpx.post(
        f"{reduced_server.url}/toonify?response=json&return_aligned=true",
        content=data,
        timeout=120,
    ).json()
    assert body["level"] == "reduced" and body["generated_size"] == 256
    sheet = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert sheet.size == (512, 1024)
    every = httpx.post(
        f"{reduced_server.url}/toonify?all_faces=true",
        content=insightface_image("t1.jpg").read_bytes(),
        timeout=120,
    )
    assert every.status_code == 200 and every.headers["x-generated-size"] == "256"
    assert Image.open(io.BytesIO(every.content)).size == (
        512 * int(every.headers["x-num-faces"]),
        512,
    )


def test_a_generator_that_cannot_run_smaller_has_no_reduced_level(
    serve, default_models, tmp_path, astronaut
):
    from model_store.build import import_generator
    from toonify.generation.signature import GeneratorSignature

    fixed = import_generator(
        fixed_batch_generator(tmp_path / "m.onnx"), "fixed-size", GeneratorSignature(), "test"
    )
    assert fixed.info.metadata["reduced_sizes"] == []
    server = serve(
        generator_model="fixed-size:latest",
        backend="onnxruntime",
        max_in_flight=0,
        degraded_max_in_flight=2,
        max_receiving=4,
    )
    response = httpx.post(f"{server.url}/toonify", content=encoded(astronaut), timeout=120)
    assert response.status_code == 503 and response.json()["error"] == "overloaded"


@pytest.mark.parametrize("upload_format", ["JPEG", "PNG", "WEBP"])
def test_no_answer_carries_the_uploads_metadata(client, astronaut, upload_format):
    """Comment, EXIF, XMP, ICC, APPn and text chunks in the upload; none of it in any answer:
    each format, the face or the whole photo, as an image, in JSON, or as a job's result."""
    upload = with_every_metadata(astronaut, upload_format)
    answers = []
    for fmt, paste_back in itertools.product(("jpeg", "png", "webp"), ("false", "true")):
        query = f"format={fmt}&paste_back={paste_back}"
        answer = client.post(f"/toonify/raw?{query}", content=upload)
        assert answer.status_code == 200, answer.text
        answers.append(answer.content)
    as_json = client.post(
        "/toonify/json", files={"image": ("a", upload)}, data={"paste_back": "true"}
    )
    answers.append(base64.b64decode(as_json.json()["image"]))
    job = client.post("/jobs/raw?paste_back=true", content=upload).json()
    for _ in range(600):
        if client.get(job["status_url"]).json()["status"] in ("done", "failed"):
            break
        time.sleep(0.1)  # a client's poll interval
    answers.append(client.get(job["result_url"]).content)
    assert [marks_in(answer) for answer in answers] == [[]] * len(answers)


@pytest.mark.served
def test_a_misspelt_setting_stops_bentoml_serve_naming_it():
    """As a new user would try it: a price variable with a typo once started and served with
    the price silently unchanged."""
    run = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", "service:Toonify", "--port", str(free_port())],
        env={**os.environ, "TOONIFY_COST_VCPU_SECONDS_USD": "0.1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = run.stdout + run.stderr
    assert run.returncode != 0
    assert "TOONIFY_COST_VCPU_SECONDS_USD (did you mean TOONIFY_COST_VCPU_SECOND_USD?)" in said


def test_errors_raised_in_a_dependency_are_answered_once_without_a_500(client, server, astronaut):
    """A user's mistake found by the preprocessing worker (no face, not an image, an answer too
    large, a face index past the faces) reaches the client with its status and code, and no
    service logs a 500 for it: BentoML answers each service's status itself."""
    seen = server.log.stat().st_size
    cases = [
        (encoded(Image.new("RGB", (640, 480), "white"), "JPEG"), "", 422, "no_face"),
        (b"GIF89a not really", "", 400, "not_an_image"),
        (encoded(astronaut, "JPEG"), "?size=4096&all_faces=true&return_aligned=true", 413, None),
        (encoded(astronaut, "JPEG"), "?face_index=3", 422, "no_face"),
    ]
    for body, query, status, code in cases:
        answer = client.post(f"/toonify/raw{query}", content=body)
        assert answer.status_code == status, answer.text
        assert code is None or answer.json()["error"] == code
    with server.log.open("rb") as log:
        log.seek(seen)
        written = log.read().decode(errors="replace")
    assert "path=/toonify_photo" in written and "status=422" in written
    assert "status=500" not in written, written[-3000:]
