"""Jobs: the store, the routes and the loop that runs them, in-process and on a served instance."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import pytest
from starlette.testclient import TestClient

from toonify.edge.gateway import Gateway
from toonify.edge.job_desk import Preference
from toonify.edge.responses import answer_response
from toonify.error_answers import answered_errors
from toonify.errors import GeneratorUnavailable, QueueFull, TooManyJobs, Unavailable
from toonify.jobs.model import Outcome, Upload, eta_s, is_job_id
from toonify.jobs.store_redis import RedisJobStore
from toonify.jobs.store_sqlite import SQLiteJobStore
from toonify.jobs.stores import open_store
from toonify.levels import Level
from toonify.request import current_request, held_photo
from toonify.schema import ToonifiedPhoto, ToonifyOptions
from toonify.settings import Settings

QUEUE = Path(tempfile.mkdtemp(prefix="toonify-test-queue-"))
SETTINGS = Settings(max_bytes=64 * 1024, degrade="off", queue_dir=str(QUEUE), result_ttl_s=60)
PHOTO = b"\xff\xd8\xff" + bytes(range(256)) * 8
RUNS: dict[int, int] = {}  # runs of the echo per failing face_index


def toonify_input():
    import service

    return service.Toonify.apis["toonify"].input_spec


async def echo_pipeline(
    photo: bytes, options: ToonifyOptions, deadline: float, level: Level, client: str
) -> ToonifiedPhoto:
    """The pipeline's stand-in: the photo's digest and what it was asked, as the image."""
    if options.face_index is not None and options.face_index >= 100:
        # face_index 100 + N: the first N runs find the generator restarting
        RUNS[options.face_index] = RUNS.get(options.face_index, 0) + 1
        if RUNS[options.face_index] <= options.face_index - 100:
            raise GeneratorUnavailable()
    echo = {
        "sha256": hashlib.sha256(photo).hexdigest(),
        "format": options.format.value,
        "level": level.value,
    }
    return ToonifiedPhoto(
        image=json.dumps(echo).encode(),
        image_type="application/json",
        level=level,
        generated_size=256,
        num_faces=1,
        faces=[],
        timings={"echo": 0.001},
    )


@bentoml.service(name="jobs-echo", metrics={"enabled": False})
class Echo:
    @bentoml.api(route="/toonify", input_spec=toonify_input())
    @answered_errors
    async def toonify(self, image: Path, **fields):
        options = ToonifyOptions(**fields)
        state = current_request()
        photo = await echo_pipeline(
            held_photo(image) or image.read_bytes(),  # as service.py takes it
            options,
            state.deadline,
            state.level,
            state.client,
        )
        return answer_response(photo, options)


Echo.add_asgi_middleware(Gateway, settings=SETTINGS, job_pipeline=echo_pipeline)


@pytest.fixture(scope="module")
def client():
    with TestClient(Echo.to_asgi(), raise_server_exceptions=False) as client:
        yield client


def finished(client, status_url: str) -> dict:
    """Poll a job's status until it ends (the loop runs it as soon as a slot is free; each
    poll is a round trip through the app's event loop, where the job runs meanwhile)."""
    for _ in range(20_000):
        status = client.get(status_url).json()
        if status["status"] in ("done", "failed"):
            return status
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


def test_a_run_that_fails_for_a_passing_reason_goes_back_in_line(client):
    """A run answered 503 (the generator restarting) is run again: the person in line gets the
    cartoon, not a 'try again'; after three runs that all fail, the job ends failed."""
    job = client.post("/jobs/raw?face_index=102", content=PHOTO).json()
    assert finished(client, job["status_url"])["status"] == "done"
    assert RUNS[102] == 3 and client.get(job["result_url"]).status_code == 200
    job = client.post("/jobs/raw?face_index=109", content=PHOTO).json()
    status = finished(client, job["status_url"])
    assert status["status"] == "failed" and status["error"] == "generator_unavailable"
    assert RUNS[109] == 3  # MAX_ATTEMPTS


def test_prefer_respond_async_on_toonify_is_a_job_answered_as_toonify_answers(client):
    direct = client.post("/toonify/raw?format=png", content=PHOTO)
    accepted = client.post(
        "/toonify/raw?format=png", content=PHOTO, headers={"Prefer": "respond-async"}
    )
    assert accepted.status_code == 202 and accepted.headers["preference-applied"] == "respond-async"
    job = accepted.json()
    assert accepted.headers["location"] == job["status_url"] and is_job_id(job["id"])
    assert finished(client, job["status_url"])["status"] == "done"
    result = client.get(job["result_url"])
    assert result.content == direct.content
    for header in ("content-type", "x-num-faces", "x-face-boxes", "content-disposition"):
        assert result.headers[header] == direct.headers[header]
    # The multipart form too, its options from the form.
    form = client.post(
        "/toonify",
        files={"image": ("a", PHOTO)},
        data={"format": "webp"},
        headers={"Prefer": "respond-async"},
    )
    assert form.status_code == 202
    assert finished(client, form.json()["status_url"])["status"] == "done"
    assert client.get(form.json()["result_url"]).json()["format"] == "webp"


def test_prefer_wait_answers_the_image_when_it_is_ready_and_the_job_when_not(client):
    waited = client.post("/toonify/raw", content=PHOTO, headers={"Prefer": "wait=10"})
    assert waited.status_code == 200 and waited.headers["preference-applied"] == "wait=10"
    assert waited.json()["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    # Three runs, the first two failing for a passing reason: not within 0 s.
    pending = client.post(
        "/toonify/raw?face_index=103", content=PHOTO, headers={"Prefer": "respond-async, wait=0"}
    )
    assert pending.status_code == 202
    assert pending.headers["preference-applied"] == "respond-async, wait=0"
    # Preferences not understood are ignored (RFC 7240): an answer as without them.
    for prefer in ("handling=lenient", "wait=soon", "respond-asyncx"):
        plain = client.post("/toonify/raw", content=PHOTO, headers={"Prefer": prefer})
        assert plain.status_code == 200 and "preference-applied" not in plain.headers
    # A photo that /toonify refuses is refused the same way, not queued.
    refused = client.post("/toonify/raw", content=b"", headers={"Prefer": "respond-async"})
    assert refused.status_code == 400 and refused.json()["error"] == "not_an_image"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["respond-async"], Preference(True, None)),
        (["Respond-Async; x=1, wait=5"], Preference(True, 5)),
        (['wait="7"', "respond-async"], Preference(True, 7)),
        (["wait=100000"], Preference(False, 120)),  # capped at the request timeout
        (["wait=-1", "handling=strict"], None),
        ([""], None),
    ],
)
def test_prefer_is_read_as_rfc_7240_says(values, expected):
    assert Preference.of(values, longest_wait_s=120) == expected


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


def test_a_jobs_options_are_the_typed_apis_options():
    """A submission's options are checked as ``ToonifyOptions`` (forms.upload_options), the
    typed API's as its input model: the same fields, with the same types and defaults."""
    api = toonify_input().model_json_schema()
    options = ToonifyOptions.model_json_schema()
    assert set(api["properties"]) - {"image"} == set(options["properties"])
    for name, schema in options["properties"].items():
        assert api["properties"][name] == schema, name
    assert api["$defs"] == options["$defs"]  # the enums


# --- the stores: one contract, the embedded SQLite and a real Redis ------------------------


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.served)])
def make_store(request, tmp_path):
    """``make_store(max_jobs, max_bytes, visibility_s, max_per_client)``: a fresh store of each
    kind."""

    def make(
        max_jobs: int = 10,
        max_bytes: int = 10_000,
        visibility_s: float = 30.0,
        max_per_client: int = 100,
    ):
        url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
        return open_store(url, tmp_path, max_jobs, max_bytes, visibility_s, max_per_client)

    yield make


OPTIONS = ToonifyOptions(size=256)


def upload(photo: bytes, webhook: str = "", client: str = "") -> Upload:
    return Upload(photo, OPTIONS, webhook, client)


def toon(image: bytes) -> Outcome:
    """A run's outcome: a toonified photo whose image is ``image``."""
    photo = ToonifiedPhoto(
        image=image,
        image_type="image/jpeg",
        level=Level.full,
        generated_size=256,
        num_faces=1,
        faces=[],
        timings={"generate": 0.01},
    )
    return Outcome(OPTIONS, photo=photo)


def everything_stored(store, tmp_path) -> bytes:
    """Every byte the store keeps: the SQLite file, or every value of every Redis key."""
    if isinstance(store, SQLiteJobStore):
        return b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    import redis

    client = redis.Redis.from_url(store_url(store))
    kept = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"hash":
            kept += list(client.hgetall(key).values())
        elif kind == b"string":
            kept.append(client.get(key))
        elif kind == b"zset":
            kept += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"".join(kept)


def store_url(store) -> str:
    kwargs = store.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def test_the_store_is_bounded_expires_results_and_keeps_no_photo_once_done(make_store, tmp_path):
    async def scenario():
        store = make_store(max_jobs=2, max_bytes=10_000)
        marker = b"PHOTO-MARKER-" * 10
        hook = "https://93.184.216.34/hook-marker"
        first = await store.submit(upload(marker, hook))
        second = await store.submit(upload(b"x"))
        with pytest.raises(QueueFull):
            await store.submit(upload(b"y"))  # past max_jobs
        assert await store.position(second) == 1 and (await store.depth())[0] == 2
        claim = await store.claim()
        assert claim.job.id == first.id and claim.upload.webhook == hook
        assert claim.upload == upload(marker, hook)
        assert (await store.get(first.id)).status == "running"
        assert await store.position(await store.get(second.id)) == 0
        answer = toon(b"ANSWER-MARKER" * 10)
        assert await store.finish(claim, answer, ttl_s=60)
        done = await store.get(first.id)
        assert done.status == "done" and done.level == "full" and done.error is None
        assert await store.outcome(first.id) == answer
        kept = everything_stored(store, tmp_path)  # the photo and the webhook went with the job
        assert marker not in kept and b"hook-marker" not in kept
        # Past the TTL the answer is gone and the id says so.
        claim = await store.claim()
        expiring = toon(b"EXPIRED-ANSWER-" * 10)
        assert await store.finish(claim, expiring, ttl_s=0)
        await store.maintain()
        assert (await store.get(second.id)).status == "expired"
        assert await store.outcome(second.id) is None
        assert b"EXPIRED-ANSWER" not in everything_stored(store, tmp_path)
        # Bytes: a photo over what the queue may hold.
        with pytest.raises(QueueFull):
            await store.submit(upload(b"z" * 10_001))

    asyncio.run(scenario())


def test_a_released_job_runs_again_at_its_place_and_kept_answers_count_in_the_bytes(
    make_store,
):
    async def scenario():
        store = make_store(max_bytes=3_000)
        first = await store.submit(upload(b"a" * 500))
        await store.submit(upload(b"b" * 500))
        claim = await store.claim()
        assert claim.job.id == first.id and claim.attempt == 1
        assert await store.release(claim)
        assert (await store.get(first.id)).status == "queued"
        assert await store.position(await store.get(first.id)) == 0  # first in line again
        again = await store.claim()
        assert again.job.id == first.id and again.attempt == 2
        # A kept answer holds bytes too: 1,000 of photos waiting, then a 2,400-byte answer.
        assert await store.finish(again, toon(b"x" * 2_400), ttl_s=0)
        with pytest.raises(QueueFull):
            await store.submit(upload(b"c" * 500))  # 500 + 2,400 + 500 > 3,000
        await store.maintain()  # the answer expires: its bytes come back
        assert (await store.submit(upload(b"c" * 500))).status == "queued"

    asyncio.run(scenario())


def test_a_client_has_a_bound_on_its_waiting_jobs_and_nothing_of_it_is_lost(make_store):
    """One client (a script) cannot fill the fleet's line: past its bound it is refused 429,
    its earlier jobs stay, other clients are taken, and a job that ends frees a place."""

    async def scenario():
        store = make_store(max_jobs=10, max_per_client=2)
        own = [upload(b"x", client="198.51.100.7")] * 3
        first, second = [await store.submit(each) for each in own[:2]]
        with pytest.raises(TooManyJobs) as refused:
            await store.submit(own[2])
        assert refused.value.status == 429 and refused.value.retry_after
        other = await store.submit(upload(b"y", client="b"))
        assert (await store.get(first.id)).status == "queued"
        assert (await store.get(other.id)).status == "queued"
        # The first round: the client's first and the other client's (in turn, not by age).
        claims = {claim.job.id: claim for claim in [await store.claim(), await store.claim()]}
        assert set(claims) == {first.id, other.id}
        await store.finish(claims[first.id], toon(b"toon"), 60)
        third = await store.submit(own[2])  # its first ended: a place is free
        await store.delete(second.id)
        fourth = await store.submit(own[2])
        assert {third.id, fourth.id} <= {(await store.get(j.id)).id for j in (third, fourth)}
        with pytest.raises(TooManyJobs):
            await store.submit(own[2])
        await store.close()

    asyncio.run(scenario())


def test_the_line_takes_clients_in_turn_and_positions_say_so(make_store):
    """Round robin over the clients with jobs waiting: a newcomer's one job waits behind one job
    of a client that queued many, not behind all of them, and each position is the number of
    jobs taken before it."""

    async def scenario():
        store = make_store(max_jobs=20, max_per_client=20)
        script = [await store.submit(upload(b"s", client="198.51.100.7")) for _ in range(6)]
        first = await store.claim()
        assert first.job.id == script[0].id
        visitor = await store.submit(upload(b"v", client="203.0.113.9"))
        later = await store.submit(upload(b"w", client="192.0.2.1"))
        waiting = [*script[1:], visitor, later]
        positions = {job.id: await store.position(job) for job in waiting}
        assert positions[visitor.id] <= 2 and positions[later.id] <= 2  # in the next round
        taken = [(await store.claim()).job.id for _ in waiting]
        assert {job_id for job_id in taken[:3]} >= {visitor.id, later.id}
        assert [positions[job_id] for job_id in taken] == list(range(len(waiting)))
        assert await store.claim() is None

    asyncio.run(scenario())


def test_delete_takes_the_photo_and_the_answer_at_once(make_store, tmp_path):
    async def scenario():
        store = make_store()
        marker = b"DELETED-PHOTO-" * 10
        queued = await store.submit(upload(marker))
        assert await store.delete(queued.id) and await store.get(queued.id) is None
        assert not await store.delete(queued.id)
        assert marker not in everything_stored(store, tmp_path)
        assert await store.claim() is None  # nothing left to run
        # Deleted while it runs: its answer is not kept.
        running = await store.submit(upload(marker))
        claim = await store.claim()
        assert await store.delete(running.id)
        assert not await store.finish(claim, toon(b"ANSWER"), ttl_s=60)
        assert await store.get(running.id) is None and await store.outcome(running.id) is None
        assert marker not in everything_stored(store, tmp_path)
        # Done, then deleted: its answer goes at once.
        done = await store.submit(upload(b"photo"))
        claim = await store.claim()
        await store.finish(claim, toon(b"DELETED-ANSWER-" * 10), ttl_s=60)
        assert await store.delete(done.id)
        assert b"DELETED-ANSWER" not in everything_stored(store, tmp_path)

    asyncio.run(scenario())


def test_the_drain_rate_counts_the_jobs_finished_in_the_window(make_store):
    async def scenario():
        store = make_store()
        assert await store.drain_rate(300) == 0.0
        for _ in range(3):
            await store.submit(upload(b"p"))
            claim = await store.claim()
            await store.finish(claim, toon(b""), ttl_s=60)
        rate = await store.drain_rate(300)
        assert rate == 3.0  # three finished within the first second (the rate's floor)
        assert eta_s(5, rate) == 2.0 and eta_s(0, 0.0) is None

    asyncio.run(scenario())


def test_a_pending_result_is_asked_for_again_after_a_third_of_its_eta():
    from toonify.edge.job_desk import poll_after_s

    assert poll_after_s(None) == 2 and poll_after_s(3.0) == 2
    assert poll_after_s(45.0) == 15 and poll_after_s(3600.0) == 30


def test_a_job_running_when_the_server_stopped_runs_again(tmp_path):
    async def scenario():
        store = SQLiteJobStore(tmp_path, max_jobs=10, max_bytes=10_000)
        job = await store.submit(upload(b"photo"))
        await store.claim()
        reopened = SQLiteJobStore(tmp_path, max_jobs=10, max_bytes=10_000)
        assert (await reopened.get(job.id)).status == "queued"

    asyncio.run(scenario())


def test_a_lapsed_claim_goes_back_in_line_and_only_the_new_one_is_answered(redis_url):
    """An instance that stops renewing (it died): after the visibility timeout another takes the
    job at its old place in line; the first claim's late answer is not kept."""

    async def scenario():
        store = RedisJobStore(redis_url, 10, 10_000, visibility_s=0.3)
        first = await store.submit(upload(b"first"))
        await store.submit(upload(b"second"))
        lost = await store.claim()
        await store.maintain()
        assert (await store.get(first.id)).status == "running"  # its claim still holds
        assert await store.renew(lost)
        await asyncio.sleep(0.4)  # the visibility timeout, past (Redis's clock decides)
        await store.maintain()
        assert (await store.get(first.id)).status == "queued"
        assert await store.position(await store.get(first.id)) == 0  # first in line again
        taken = await store.claim()
        assert taken.job.id == first.id and taken.token != lost.token
        assert not await store.renew(lost)
        assert not await store.finish(lost, toon(b"LATE"), ttl_s=60)
        assert await store.finish(taken, toon(b"KEPT"), ttl_s=60)
        assert (await store.outcome(first.id)).photo.image == b"KEPT"
        assert int(await store.redis.get("toonify:answers_kept")) == 1  # the late one: not kept
        await store.close()

    asyncio.run(scenario())


@pytest.mark.served
def test_a_redis_out_of_memory_is_queue_full_not_unavailable():
    """With noeviction, a full Redis refuses writes: a submission is 503 queue_full."""
    from tools.redis_server import RedisServer, redis_available

    if not redis_available():
        pytest.skip("redis-server is not installed")
    small = RedisServer(maxmemory="3mb")
    try:

        async def scenario():
            store = RedisJobStore(small.url, 1000, 10**9, visibility_s=30)
            with pytest.raises(QueueFull):
                for _ in range(20):
                    await store.submit(upload(b"p" * 500_000))
            await store.close()

        asyncio.run(scenario())
    finally:
        small.close()


def test_a_stopped_redis_is_503_unavailable_and_back_when_it_is(redis_server, redis_url):
    async def scenario():
        store = RedisJobStore(redis_url, 10, 10_000, visibility_s=30)
        job = await store.submit(upload(b"photo"))
        redis_server.stop()
        for call in (store.submit(upload(b"p")), store.get(job.id), store.claim()):
            with pytest.raises(Unavailable) as raised:
                await call
            assert raised.value.status == 503 and raised.value.code == "unavailable"
        redis_server.start()  # nothing persisted: the queue is empty again (docs/jobs.md)
        assert await store.get(job.id) is None
        assert (await store.submit(upload(b"p"))).status == "queued"
        await store.close()

    asyncio.run(scenario())


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
        # The same upload with Prefer: put in line, answered with the same bytes and headers.
        options = "?paste_back=true&format=webp&quality=80"
        pasted = client.post(f"/toonify/raw{options}", content=photo)
        later = client.post(
            f"/toonify/raw{options}", content=photo, headers={"Prefer": "respond-async"}
        )
        assert later.status_code == 202 and later.headers["location"] == later.json()["status_url"]
        assert later.headers["preference-applied"] == "respond-async"
        assert wait_for_job(client, later.json(), time.monotonic() + 60)["status"] == "done"
        answer = client.get(later.json()["result_url"])
        waited = client.post(f"/toonify/raw{options}", content=photo, headers={"Prefer": "wait=30"})
    assert direct.status_code == 200 and results == [direct.content] * 12
    assert pasted.status_code == 200 and answer.content == pasted.content == waited.content
    for header in ("content-type", "x-num-faces", "x-face-boxes", "x-service-level"):
        assert answer.headers[header] == pasted.headers[header] == waited.headers[header]
    assert waited.status_code == 200 and waited.headers["preference-applied"] == "wait=30"
    assert {"/jobs", "/jobs/raw", "/jobs/{id}", "/jobs/{id}/result"} <= set(spec["paths"])


def wait_for_job(client: httpx.Client, job: dict, ends: float) -> dict:
    while time.monotonic() < ends:
        status = client.get(job["status_url"]).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.1)  # a client's poll interval
    raise AssertionError(f"job {job['id']} did not end: {status}")


@pytest.mark.served
def test_a_fleet_on_redis_finishes_a_killed_instances_job_once(
    serve, default_models, astronaut, redis_url
):
    """Two instances share a Redis. The first takes a job and is killed (SIGKILL, the whole
    process group) while it runs: the second takes it after the visibility timeout and answers
    it, once; every job ends done, and the result is what /toonify gives."""
    from loadtest.photos import phone_jpeg

    settings = dict(
        queue_url=redis_url, queue_visibility_timeout_s=3, max_in_flight=1, degrade="off"
    )
    first = serve(**settings)
    photo = phone_jpeg(astronaut)  # a 12 MP paste_back: about a second of work each
    path = "/jobs/raw?paste_back=true&size=2048&format=jpeg"
    jobs = [httpx.post(first.url + path, content=photo, timeout=60).json() for _ in range(4)]
    with httpx.Client(base_url=first.url, timeout=30) as client:
        ends = time.monotonic() + 60
        while client.get(jobs[0]["status_url"]).json()["status"] != "running":
            assert time.monotonic() < ends
            time.sleep(0.02)
    first.kill()  # mid-job: nothing is finished or given back
    import redis

    left = redis.Redis.from_url(redis_url)
    assert left.hget(f"toonify:job:{jobs[0]['id']}", "status") == b"running"
    second = serve(**settings)
    with httpx.Client(base_url=second.url, timeout=60) as client:
        ends = time.monotonic() + 120
        statuses = [wait_for_job(client, job, ends) for job in jobs]
        assert [s["status"] for s in statuses] == ["done"] * 4, statuses
        results = [client.get(job["result_url"]) for job in jobs]
        direct = client.post("/toonify/raw?paste_back=true&size=2048&format=jpeg", content=photo)
        metrics = client.get("/metrics").text
    assert direct.status_code == 200
    assert all(r.status_code == 200 and r.content == direct.content for r in results)
    # Answered once: the second instance finished the killed job and kept every answer it
    # made (none discarded), and nothing is left queued or running in Redis.
    counted = [line for line in metrics.splitlines() if line.startswith("toonify_jobs")]
    assert jobs_counted(metrics, "done") >= 1, counted
    assert jobs_counted(metrics, "discarded") == 0, counted
    assert left.zcard("toonify:queued") == 0 and left.zcard("toonify:running") == 0


@pytest.mark.served
def test_with_redis_stopped_jobs_are_503_and_toonify_still_answers(
    serve, default_models, redis_server, redis_url, photo_jpeg
):
    server = serve(queue_url=redis_url)
    assert httpx.post(f"{server.url}/jobs/raw", content=photo_jpeg, timeout=60).status_code == 202
    redis_server.stop()
    submitted = httpx.post(f"{server.url}/jobs/raw", content=photo_jpeg, timeout=60)
    assert submitted.status_code == 503 and submitted.json()["error"] == "unavailable"
    assert "Retry-After" in submitted.headers and "/toonify" in submitted.json()["detail"]
    status = httpx.get(f"{server.url}/jobs/{'a' * 22}", timeout=30)
    assert status.status_code == 503 and status.json()["error"] == "unavailable"
    direct = httpx.post(f"{server.url}/toonify/raw", content=photo_jpeg, timeout=60)
    assert direct.status_code == 200 and direct.headers["content-type"] == "image/jpeg"
    assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200
    redis_server.start()
    again = httpx.post(f"{server.url}/jobs/raw", content=photo_jpeg, timeout=60)
    assert again.status_code == 202


def jobs_counted(text: str, outcome: str) -> float:
    """``toonify_jobs_total`` for ``outcome``, summed over its series (0 if none yet)."""
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("toonify_jobs_total{") and f'outcome="{outcome}"' in line
    )


@pytest.fixture
def photo_jpeg(astronaut) -> bytes:
    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG")
    return buffer.getvalue()


def hostile_uploads(astronaut) -> dict[str, tuple[str, bytes]]:
    """The kinds of bad upload /toonify refuses before finding faces (tests/test_hostile.py and
    tests/test_decode.py): path and query, and the body."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    tga = io.BytesIO()
    astronaut.save(tga, "TGA")
    good = io.BytesIO()
    astronaut.save(good, "JPEG")
    return {
        "empty": ("", b""),
        "text": ("", b"hello, this is plain text and not a picture\n" * 20),
        "pdf": ("", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
        "bomb": ("", bomb),
        "unsupported format": ("", tga.getvalue()),
        "answer over the output budget": (
            "?all_faces=true&return_aligned=true&size=4096",
            good.getvalue(),
        ),
        "bad option": ("?size=5e2", good.getvalue()),
    }


@pytest.mark.served
def test_hostile_uploads_get_the_same_refusal_at_jobs_as_at_toonify(
    serve, default_models, astronaut, tmp_path
):
    server = serve(queue_dir=str(tmp_path / "queue"), max_output_pixels=4096 * 4096)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for kind, (query, body) in hostile_uploads(astronaut).items():
            direct = client.post(f"/toonify/raw{query}", content=body)
            job = client.post(f"/jobs/raw{query}", content=body)
            assert 400 <= direct.status_code < 500, (kind, direct.text)
            assert (job.status_code, job.json()["error"]) == (
                direct.status_code,
                direct.json()["error"],
            ), kind
        depth = client.get("/metrics").text
    assert "toonify_queue_depth 0.0" in depth  # nothing was queued


@pytest.mark.served
def test_sigterm_with_a_backlog_exits_in_time_and_loses_no_job(
    serve, default_models, astronaut, tmp_path
):
    """SIGTERM with 200 jobs waiting: no job starts after it, the running ones finish, the
    instance exits within the request timeout and a few seconds, and every job is either done
    with its answer or still in line with its photo (the next start runs it)."""
    timeout_s = 20
    server = serve(
        request_timeout_s=timeout_s,
        queue_dir=str(tmp_path / "queue"),
        queue_max_jobs_per_client=200,  # all from one address
    )
    buffer = io.BytesIO()
    astronaut.resize((2048, 2048)).save(buffer, "JPEG")
    path = f"{server.url}/jobs/raw?paste_back=true"
    with ThreadPoolExecutor(8) as pool:
        submitted = list(
            pool.map(lambda _: httpx.post(path, content=buffer.getvalue(), timeout=60), range(200))
        )
    assert [s.status_code for s in submitted] == [202] * 200
    with httpx.Client(base_url=server.url, timeout=30) as client:
        wait_for_job(client, submitted[0].json(), time.monotonic() + 60)
    signalled = time.monotonic()
    os.killpg(server.process.pid, signal.SIGTERM)
    server.process.wait(timeout=timeout_s + 60)
    exited_s = time.monotonic() - signalled
    with sqlite3.connect(tmp_path / "queue" / "jobs.sqlite3") as db:
        rows = db.execute(
            "SELECT status, photo IS NOT NULL, result IS NOT NULL FROM jobs"
        ).fetchall()
    ends = Counter(rows)
    print(f"exited {exited_s:.1f} s after SIGTERM; jobs {dict(ends)}")
    assert exited_s < timeout_s + 5
    assert len(rows) == 200 and set(ends) <= {("done", 0, 1), ("queued", 1, 0)}, ends


@pytest.mark.served
def test_one_client_past_its_bound_is_told_429_and_keeps_its_jobs(
    serve, default_models, photo_jpeg, tmp_path
):
    server = serve(
        queue_max_jobs_per_client=2, queue_max_running=0, queue_dir=str(tmp_path / "queue")
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        kept = [client.post("/jobs/raw", content=photo_jpeg) for _ in range(2)]
        refused = client.post("/jobs/raw", content=photo_jpeg)
        statuses = [client.get(job.json()["status_url"]).json()["status"] for job in kept]
    other = httpx.Client(
        base_url=server.url, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    with other:
        elsewhere = other.post("/jobs/raw", content=photo_jpeg)
    assert [job.status_code for job in kept] == [202, 202] and statuses == ["queued"] * 2
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_jobs"
    assert int(refused.headers["retry-after"]) > 0
    assert elsewhere.status_code == 202


@pytest.mark.served
@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_a_visitor_waits_behind_a_few_of_a_scripts_jobs_not_all_of_them(
    request, store, serve, default_models, astronaut, tmp_path
):
    """One client (a script at 127.0.0.2) queues 40 slow jobs, past its bound of 30; a visitor
    (127.0.0.1) then queues one: it is among the next few in line, and done before five more of
    the script's are."""
    if store == "redis":  # a database of its own: earlier tests' instances poll database 0
        queue = {"queue_url": request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/7"}
    else:
        queue = {"queue_dir": str(tmp_path / "queue")}
    server = serve(max_in_flight=1, degrade="off", queue_max_jobs_per_client=30, **queue)
    buffer = io.BytesIO()
    astronaut.resize((2048, 2048)).save(buffer, "JPEG")
    path = "/jobs/raw?paste_back=true"
    script = httpx.Client(
        base_url=server.url, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    with script, httpx.Client(base_url=server.url, timeout=60) as visitor:
        submitted = [script.post(path, content=buffer.getvalue()) for _ in range(40)]
        codes = Counter(each.status_code for each in submitted)
        assert codes[429] > 0 and codes[202] >= 30 and codes[202] + codes[429] == 40, codes
        scripts = [each.json()["status_url"] for each in submitted if each.status_code == 202]

        def scripts_done() -> int:
            states = [script.get(url).json()["status"] for url in scripts]
            return sum(state == "done" for state in states)

        done_before = scripts_done()
        job = visitor.post(path, content=buffer.getvalue()).json()
        assert job["position"] <= 3, job
        ended = wait_for_job(visitor, job, time.monotonic() + 120)
        done_after = scripts_done()
    assert ended["status"] == "done"
    assert done_after - done_before < 5, (done_before, done_after)
    assert done_after < len(scripts)  # the script's line was still long
