"""Jobs: the store, the routes and the loop that runs them, in-process and on a served instance."""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import pytest
from starlette.testclient import TestClient

from toonify.edge.context import request_level
from toonify.edge.gateway import Gateway
from toonify.edge.jobs import JobStore, Upload, is_job_id
from toonify.errors import QueueFull, answered_errors
from toonify.settings import Settings

QUEUE = Path(tempfile.mkdtemp(prefix="toonify-test-queue-"))
SETTINGS = Settings(max_bytes=64 * 1024, degrade="off", queue_dir=str(QUEUE), result_ttl_s=60)
PHOTO = b"\xff\xd8\xff" + bytes(range(256)) * 8


def toonify_input():
    import service

    return service.Toonify.apis["toonify"].input_spec


@bentoml.service(name="jobs-echo", metrics={"enabled": False})
class Echo:
    @bentoml.api(route="/toonify", input_spec=toonify_input())
    @answered_errors
    async def toonify(self, image: Path, **options) -> dict:
        return {
            "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
            "format": str(options["format"]),
            "level": request_level().value,
        }


Echo.add_asgi_middleware(Gateway, settings=SETTINGS, job_input=toonify_input)


@pytest.fixture(scope="module")
def client():
    with TestClient(Echo.to_asgi(), raise_server_exceptions=False) as client:
        yield client


def finished(client, status_url: str) -> dict:
    """Poll a job's status until it ends (the loop runs it as soon as a slot is free)."""
    for _ in range(500):
        status = client.get(status_url).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.01)  # a poll interval, as a client's
    raise AssertionError(status)


def test_a_job_is_queued_run_once_and_answered_as_toonify_would(client):
    submitted = client.post("/jobs/raw?format=png", content=PHOTO)
    assert submitted.status_code == 202
    job = submitted.json()
    assert is_job_id(job["id"]) and submitted.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["position"] == 0
    assert finished(client, job["status_url"])["status"] == "done"
    result = client.get(job["result_url"])
    direct = client.post("/toonify/raw?format=png", content=PHOTO)
    assert result.status_code == 200 and result.json() == direct.json()
    assert result.json()["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    assert client.delete(job["status_url"]).status_code == 204
    assert client.get(job["status_url"]).status_code == 404
    assert client.get(job["result_url"]).json()["error"] == "not_found"


def test_a_multipart_job_is_checked_at_submission(client):
    job = client.post("/jobs", files={"image": ("a", PHOTO)}, data={"format": "webp"}).json()
    assert finished(client, job["status_url"])["status"] == "done"
    assert client.get(job["result_url"]).json()["format"] == "webp"
    refused = client.post("/jobs", files={"image": ("a", PHOTO)}, data={"size": "9999"})
    assert refused.status_code == 400 and refused.json()["error"] == "bad_option"
    assert client.post("/jobs/raw", content=b"").json()["error"] == "not_an_image"


@pytest.mark.parametrize("job_id", ["A" * 22, "../../etc/passwd", "x" * 5000, "%00"])
def test_unknown_and_malformed_ids_are_a_json_404(client, job_id):
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/result"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_methods_the_routes_do_not_take_are_405(client):
    assert client.get("/jobs").status_code == 405
    job = client.post("/jobs/raw", content=PHOTO).json()
    assert client.post(job["status_url"]).status_code == 405
    assert client.delete(job["result_url"]).status_code == 405


def test_the_store_is_bounded_expires_results_and_overwrites_what_it_deletes(tmp_path):
    store = JobStore(tmp_path, max_jobs=2, max_bytes=10_000)
    marker = b"PHOTO-MARKER-" * 10
    first = store.submit(Upload("/toonify/raw", b"", b"image/jpeg", marker))
    store.submit(Upload("/toonify/raw", b"", b"image/jpeg", b"x"))
    with pytest.raises(QueueFull):
        store.submit(Upload("/toonify/raw", b"", b"image/jpeg", b"y"))
    job, upload = store.claim()
    assert job.id == first.id and job.status == "running" and upload.body == marker
    from toonify.edge.jobs import Answer

    store.finish(job.id, Answer(200, [(b"x-a", b"1")], b"ANSWER-MARKER" * 10), "full", ttl_s=0)
    assert store.expire() == 1 and store.get(job.id).status == "expired"
    assert store.answer(job.id) is None
    on_disk = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert marker not in on_disk and b"ANSWER-MARKER" not in on_disk


def test_a_job_running_when_the_server_stopped_runs_again(tmp_path):
    store = JobStore(tmp_path, max_jobs=10, max_bytes=10_000)
    job = store.submit(Upload("/toonify/raw", b"", b"image/jpeg", b"photo"))
    store.claim()
    reopened = JobStore(tmp_path, max_jobs=10, max_bytes=10_000)
    assert reopened.get(job.id).status == "queued"


# --- served ----------------------------------------------------------------------------------


@pytest.mark.served
def test_twelve_jobs_at_once_on_one_slot_all_end_done_as_toonify_answers(
    serve, default_models, astronaut, tmp_path
):
    server = serve(max_in_flight=1, degrade="off", queue_dir=str(tmp_path / "queue"))
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG")
    photo = buffer.getvalue()
    with ThreadPoolExecutor(12) as pool:
        submitted = list(
            pool.map(
                lambda _: httpx.post(
                    f"{server.url}/jobs/raw?format=png", content=photo, timeout=60
                ),
                range(12),
            )
        )
    assert [s.status_code for s in submitted] == [202] * 12
    results = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for job in (s.json() for s in submitted):
            for _ in range(600):
                status = client.get(job["status_url"]).json()
                if status["status"] in ("done", "failed"):
                    break
                assert status["eta_s"] is None or status["eta_s"] > 0
                time.sleep(0.1)  # a client's poll interval
            assert status["status"] == "done" and status["level"] == "full", status
            result = client.get(job["result_url"])
            assert result.status_code == 200 and result.headers["content-type"] == "image/png"
            results.append(result.content)
            assert client.delete(job["status_url"]).status_code == 204
            assert client.get(job["result_url"]).status_code in (404, 410)
        # The queue is empty now, so the one slot is free for the synchronous path.
        direct = client.post("/toonify/raw?format=png", content=photo)
        spec = client.get("/docs.json").json()
    assert direct.status_code == 200 and results == [direct.content] * 12
    assert {"/jobs", "/jobs/raw", "/jobs/{id}", "/jobs/{id}/result"} <= set(spec["paths"])
