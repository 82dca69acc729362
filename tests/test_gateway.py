"""The entry's gateway, request parsers and error answers in-process, through an ASGI transport.

A small BentoML service takes the real ``POST /toonify`` input model (service.py's typed API) and
echoes what reached it; the gateway, the two request forms (toonify/edge/forms.py), BentoML's own
app and ``ErrorAnswers`` are the real ones. No server, no model.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import subprocess
import sys
import time
from pathlib import Path

import bentoml
import pytest
from starlette.testclient import TestClient

from preprocess import NoFaceFound
from toonify import bentoml_patches
from toonify.edge.gateway import Gateway
from toonify.error_answers import answered_errors
from toonify.request import held_photo, request_deadline, request_level
from toonify.settings import Settings

MAX_BYTES = 64 * 1024
SETTINGS = Settings(max_bytes=MAX_BYTES, request_timeout_s=30, degrade="off")
PHOTO = b"\xff\xd8\xff" + bytes(range(256)) * 8  # bytes the parsers never look into


def toonify_input():
    import service  # the real typed API's input model (no model is loaded)

    return service.Toonify.apis["toonify"].input_spec


@bentoml.service(name="gateway-echo", traffic={"timeout": 1}, metrics={"enabled": False})
class Echo:
    """Answers with what the typed API received; ``face_index`` picks a failure to raise."""

    @bentoml.api(route="/toonify", input_spec=toonify_input())
    @answered_errors
    async def toonify(self, image: Path, **options) -> dict:
        if options["face_index"] == 7:
            raise NoFaceFound("No face at index 7; the photo has 2.", num_faces=2)
        if options["face_index"] == 8:
            raise RuntimeError("our own bug")
        if options["face_index"] == 9:
            await asyncio.Event().wait()  # past the service's 1 s timeout
        data = held_photo(image) or image.read_bytes()  # as service.py takes it
        return {
            "sha256": hashlib.sha256(data).hexdigest(),
            "options": {name: str(value) for name, value in options.items()},
            "level": request_level().value,
            "deadline_in_s": request_deadline() - time.time(),
        }


Echo.add_asgi_middleware(Gateway, settings=SETTINGS)


@pytest.fixture(scope="module")
def client():
    with TestClient(Echo.to_asgi(), raise_server_exceptions=False) as client:
        yield client


def echoed(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and len(body["detail"]) > 10, body
    assert response.headers["x-error-code"] == code
    return body


# --- one parse per form ------------------------------------------------------------------------


def test_a_multipart_photo_reaches_the_api_unchanged_with_its_options_typed(client):
    answer = echoed(
        client.post(
            "/toonify",
            files={"image": ("a.bin", PHOTO, "application/octet-stream")},
            data={"format": "png", "size": "256", "paste_back": "true"},
        )
    )
    assert answer["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    assert answer["options"]["format"] == "png" and answer["options"]["size"] == "256"
    assert answer["options"]["paste_back"] == "True" and answer["options"]["quality"] == "90"
    assert answer["level"] == "full" and 25 < answer["deadline_in_s"] <= 30


def test_a_raw_body_is_the_photo_and_the_query_holds_the_options(client):
    answer = echoed(
        client.post(
            "/toonify?format=webp&quality=50",
            content=PHOTO,
            headers={"content-type": "application/json"},  # whatever the client declared
        )
    )
    assert answer["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    assert answer["options"]["format"] == "webp" and answer["options"]["quality"] == "50"


def test_bentoml_clients_json_encoded_values_decode(client):
    options = echoed(
        client.post("/toonify", files={"image": ("a", PHOTO)}, data={"format": '"png"'})
    )["options"]
    assert options["format"] == "png"
    # null for an option whose default is none, as the document says (nullable)
    data = {"size": "null", "face_index": "null"}
    options = echoed(client.post("/toonify", files={"image": ("a", PHOTO)}, data=data))["options"]
    assert options["size"] == "None" and options["face_index"] == "None"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("format=gif", "format"),
        ("size=9999", "size"),
        ("quality=0", "quality"),
        ("colour=red", "colour: unknown option"),
        ("size=1&size=2", "size given twice"),
        ("image=x", "image: unknown option"),
    ],
)
def test_bad_options_are_a_400_naming_the_option(client, query, named):
    body = refused(client.post(f"/toonify?{query}", content=PHOTO), 400, "bad_option")
    assert named in body["detail"]


def test_options_come_from_the_form_or_the_query_never_both(client):
    response = client.post("/toonify?size=256", files={"image": ("a", PHOTO)}, data={"size": "9"})
    assert "/toonify/raw" in refused(response, 400, "bad_option")["detail"]
    raw = echoed(client.post("/toonify/raw?size=256", content=PHOTO))
    assert raw["options"]["size"] == "256"
    # At /raw even a multipart label is the photo itself.
    labelled = client.post(
        "/toonify/raw", content=PHOTO, headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert echoed(labelled)["sha256"] == hashlib.sha256(PHOTO).hexdigest()


PART = b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nJPEGDATA'
FIELD = b'Content-Disposition: form-data; name="f%d"\r\n\r\n1'


def form(*parts: bytes) -> bytes:
    return b"".join(b"--XyZ\r\n" + part + b"\r\n" for part in parts) + b"--XyZ--\r\n"


@pytest.mark.parametrize(
    "body",
    [
        form(PART, PART),
        form(PART, b'Content-Disposition: form-data; name="format"\r\n\r\n' + b"j" * 2000),
        form(PART, *[FIELD % i for i in range(17)]),
        form(b"Content-Disposition: form-data\r\n\r\nxx"),
        form(b'Content-Disposition: form-data; name="image"\r\n\r\nhttp://169.254.169.254/latest'),
        form(b'Content-Disposition: form-data; name="photo"; filename="a"\r\n\r\nJPEGDATA'),
        b"--XyZ\r\nno headers at all, no end",
    ],
    ids=["two photos", "a long field", "17 fields", "no name", "a link", "wrong name", "garbage"],
)
def test_a_malformed_form_is_a_400_in_json(client, body):
    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    refused(client.post("/toonify", content=body, headers=headers), 400, "bad_request")


def test_an_empty_upload_is_not_an_image(client):
    refused(client.post("/toonify", content=b""), 400, "not_an_image")


# --- limits before and around the body ---------------------------------------------------------


def test_a_declared_length_over_the_limit_is_refused_before_the_body(client):
    headers = {"content-length": str(50 * MAX_BYTES)}
    refused(client.post("/toonify", content=b"x", headers=headers), 413, "too_large")


def test_a_chunked_body_over_the_limit_is_cut_off(client):
    def chunks():
        for _ in range(40):
            yield b"\0" * 4096

    refused(client.post("/toonify", content=chunks()), 413, "too_large")


# --- what the API raises is answered in one place ----------------------------------------------


def test_a_users_error_raised_by_the_api_gets_its_status_and_body(client):
    body = refused(client.post("/toonify?face_index=7", content=PHOTO), 422, "no_face")
    assert body["num_faces"] == 2


def test_our_own_bug_is_a_500_internal_without_retry_after(client):
    response = client.post("/toonify?face_index=8", content=PHOTO)
    refused(response, 500, "internal")
    assert "retry-after" not in response.headers


def test_unknown_paths_and_methods_answer_in_json(client):
    refused(client.get("/wp-login.php"), 404, "not_found")
    wrong_method = client.get("/toonify")
    refused(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"  # as HTTP requires of a 405
    raw_form = client.request("TRACE", "/toonify/raw")
    refused(raw_form, 405, "method_not_allowed")
    assert raw_form.headers["allow"] == "POST"


@pytest.mark.slow  # a subprocess or a real timeout: `make test`, not test-fast
def test_the_patched_timeout_middleware_is_in_the_stack_and_answers_504_in_json(client):
    stack, found = client.app.middleware_stack, []
    while stack is not None:
        found.append(type(stack))
        stack = getattr(stack, "app", None)
    assert bentoml_patches.TimeoutMiddleware in found
    response = client.post("/toonify?face_index=9", content=PHOTO)
    refused(response, 504, "timeout")
    assert response.headers["retry-after"] == "5"


def test_every_patch_is_installed_and_a_changed_bentoml_fails_loudly(monkeypatch):
    assert all(bentoml_patches.installed().values())
    monkeypatch.setattr(bentoml, "__version__", "9.9.9")
    with pytest.raises(bentoml_patches.PatchOutOfDate, match=r"9\.9\.9.*bentoml-patches\.md"):
        bentoml_patches.require(False, "something it relied on")


def test_the_app_factory_check_passes_here_and_fails_loudly_if_it_no_longer_reads_the_parsers(
    monkeypatch,
):
    from _bentoml_impl.server.app import ServiceAppFactory

    bentoml_patches.check_app_factory()  # what each service runs as it starts

    async def endpoint_without_the_table(self, request):  # as if BentoML moved its parsers
        return None

    monkeypatch.setattr(ServiceAppFactory, "api_endpoint", endpoint_without_the_table)
    with pytest.raises(bentoml_patches.PatchOutOfDate, match="ALL_SERDE"):
        bentoml_patches.check_app_factory()


@pytest.mark.slow  # a subprocess or a real timeout: `make test`, not test-fast
def test_importing_the_service_module_loads_neither_aiohttp_nor_the_gateway():
    """What `bentoml serve`'s main process pays before it starts the workers."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, service; "
            "print([m for m in ('aiohttp', 'toonify.edge.gateway', '_bentoml_impl.server.app',"
            " 'onnxruntime', 'openvino', 'cv2') if m in sys.modules])",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_an_in_process_caller_gets_the_exception():
    with pytest.raises(NoFaceFound):
        asyncio.run(Echo().toonify.local(Path(__file__), face_index=7))


def test_the_document_gives_each_form_its_own_operation():
    import service
    from toonify.edge import openapi

    spec = openapi.complete(service.Toonify.openapi_spec.asdict())
    for path in ("/toonify", "/toonify/json"):
        form, raw = spec["paths"][path]["post"], spec["paths"][f"{path}/raw"]["post"]
        assert set(form["requestBody"]["content"]) == {"multipart/form-data"}
        # Options in the form only; both take the Prefer header that puts the photo in line.
        assert [(p["name"], p["in"]) for p in form["parameters"]] == [("Prefer", "header")]
        assert set(raw["requestBody"]["content"]) == {"image/*"}
        assert {p["in"] for p in raw["parameters"] if p["name"] != "Prefer"} == {"query"}
        assert "202" in form["responses"] and "202" in raw["responses"]
        assert "422" in form["responses"] and "422" in raw["responses"]
        fields = form["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert fields["size"]["nullable"] and "nullable" not in fields["quality"]


def test_each_reliance_without_a_patch_fails_the_start_loudly_when_bentoml_changes(monkeypatch):
    """Each member the service relies on, taken away as an upgrade might: the check run at start
    names it (and the doc that says what breaks)."""
    from _bentoml_impl.client import proxy2
    from _bentoml_impl.server import serving
    from starlette.formparsers import MultiPartParser

    import service

    bentoml_patches.check_reliances()
    bentoml_patches.check_dependency_errors()

    async def parse_request(self, request):  # a parser method of another shape
        return None

    def fails(check, named: str) -> None:
        with pytest.raises(bentoml_patches.PatchOutOfDate, match=named):
            check()
        monkeypatch.undo()

    monkeypatch.setattr(bentoml_patches.MultipartSerde, "parse_request", parse_request)
    fails(bentoml_patches.check_reliances, "MultipartSerde.parse_request")
    monkeypatch.delattr(MultiPartParser, "spool_max_size")
    fails(bentoml_patches.check_reliances, "spool_max_size")
    monkeypatch.setattr("inspect.getsource", lambda module: "")
    fails(bentoml_patches.check_reliances, "BENTOML_NO_UDS")
    monkeypatch.setattr(proxy2, "map_exception", lambda response: Exception("no body"))
    fails(bentoml_patches.check_dependency_errors, "map_exception")
    monkeypatch.setattr(service.Toonify, "dependencies", {})
    fails(lambda: bentoml_patches.dependency_client(service.Toonify, "preprocess"), "preprocess")
    assert "BENTOML_NO_UDS" in inspect.getsource(serving)
