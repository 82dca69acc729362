"""Toonify serving: a face photo in, its cartoon out.

    client --photo--> Toonify     POST /toonify (typed), web page, /docs, /metrics, behind the
                        |         gateway: admission, body limits, billing, JSON errors
                        |--photo bytes + options--> Preprocess   decode once, EXIF orient, detect,
                        |                             |          FFHQ align; paste back, encode
                        |                             |--uint8 crops--> Generator   ONNX Runtime
                        |                             | + feature rows             or OpenVINO,
                        |                             |<--uint8 toons--            batched
                        |<--the answer image + faces + timings--
           <--image or JSON--

The photo crosses one process boundary and is decoded once; only aligned crops go to the
generator, which is its own service so it scales and batches on its own. Each service's heavy
imports happen in its ``__init__``: the entry worker never loads an ONNX runtime.
Run with ``bentoml serve``; settings: toonify/settings.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import anyio
import bentoml
from bentoml.validators import ContentType
from starlette.types import ASGIApp

from preprocess import InputError
from toonify import bentoml_patches, metrics, shutdown
from toonify.calls import call_service
from toonify.edge.forms import PARSERS
from toonify.edge.responses import answer_headers, answer_json, answer_response
from toonify.edge.site import make_site
from toonify.error_answers import ErrorAnswers, answered_errors
from toonify.errors import GeneratorUnavailable
from toonify.generation.signature import GeneratorSignature
from toonify.levels import Ladder, Level
from toonify.model_tags import stored_detector
from toonify.request import held_photo, request_client, request_deadline, request_level
from toonify.schema import (
    DEFAULTS,
    FaceCrops,
    FaceIndex,
    Flag,
    Format,
    Quality,
    ResponseKind,
    Size,
    ToonifiedPhoto,
    ToonifyJSON,
    ToonifyOptions,
    Toons,
)
from toonify.settings import SETTINGS

logger = logging.getLogger("toonify")

# Every worker gets buffers of 16 MB and more (a decoded 12 MP photo, a pasted-back answer) from
# mmap, returned to the system when freed: glibc's default raises this threshold as big buffers
# come and go, and the workers then kept their high-water marks (docs/reliability.md). At 1 MB
# every photo's bytes, crop tensor and aligned region were fresh pages, and their page faults
# cost 11% of an image's CPU (docs/performance.md, issue 33). glibc reads it as each worker starts.
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(16 << 20))
# Pillow keeps up to this many of its 16 MB pixel blocks for the next image instead of handing
# each back (the decoded photos are the largest buffers of the preprocessing worker).
os.environ.setdefault("PILLOW_BLOCKS_MAX", "8")
# Each checked first (docs/bentoml-patches.md). Among them: the services talk over loopback TCP,
# not Unix sockets (BENTOML_NO_UDS): on SIGTERM BentoML deletes its socket directory at once,
# before the workers drain, and the entry's in-flight requests could no longer reach the others.
bentoml_patches.install(PARSERS)

# Internal calls keep one connection pool for the life of the worker: BentoML's default renews
# the pool every 100 calls by closing it under calls still reading their answers
# ("RuntimeError: Connection closed.", and hangs), and /readyz polls count as calls.
STEADY_CONNECTIONS = {"max_requests": 2**31 - 1, "max_age": 1e9}
# A job's photo is checked at submission from its first bytes: a photo's header is within them
# (JPEG's markers, PNG's chunks before the pixels), and a 12 MB photo need not cross whole twice.
CHECKED_BYTES = 1 << 20
# Compiled and optimised models kept between starts (ONNX Runtime's, OpenVINO's).
CACHE_DIR = SETTINGS.cache_dir or Path(tempfile.gettempdir()) / "toonify-cache"
# A dependency keeps serving after SIGTERM until the entry has answered everything in flight.
DRAIN_GRACE_S = SETTINGS.request_timeout_s + 15


@bentoml.service(
    name="toonify-generator",
    workers=SETTINGS.generator_workers,
    traffic={"timeout": SETTINGS.request_timeout_s + 10},  # the request's own deadline first
    runner_connection=STEADY_CONNECTIONS,
)
class Generator:
    model = bentoml.models.BentoModel(SETTINGS.generator_model)

    def __init__(self) -> None:
        from model_store.load import load_configured_generator
        from toonify.generation.batching import Batcher

        self.generator = load_configured_generator(self.model, SETTINGS, CACHE_DIR)
        # Before /readyz says yes, at the sizes both levels of the ladder send.
        warm_up = self.generator.warm_up((SETTINGS.crop_size, SETTINGS.degraded_size))
        logger.info(
            "generator %s on %s, %d streams of %d threads: loaded in %.2f s, warm-up %.2f s",
            self.model.tag,
            self.generator.providers,
            self.generator.streams,
            max(1, self.generator.threads // self.generator.streams),
            self.generator.load_seconds,
            warm_up,
        )
        metrics.model_load_seconds.labels(str(self.model.tag)).set(
            self.generator.load_seconds + warm_up
        )
        # A model whose batch axis is fixed runs its crops one by one: batches of more would
        # hold a stream while another stands idle.
        max_batch = min(
            SETTINGS.max_batch_size or self.generator.best_batch,
            self.generator.max_batch or 2**31,
        )
        self.batcher = Batcher(
            self.generator, max_batch, metrics.observe_batch, parallel=self.generator.streams
        )
        shutdown.drain_after_entry(DRAIN_GRACE_S)
        started("generator")

    @bentoml.api
    @answered_errors
    async def generate(self, crops: FaceCrops) -> Toons:
        """One photo's aligned crops in, their toons out, batched with other photos' crops."""
        pixels, run = await self.batcher(crops.pixels, crops.deadline, crops.features)
        return Toons(
            pixels=pixels,
            queued_s=run.queued_s,
            generate_s=run.run_s,
            batch_size=run.batch_size,
            generated_size=self.generator.run_size(*crops.pixels.shape[1:3]),
        )


@bentoml.service(
    name="toonify-preprocess",
    workers=SETTINGS.preprocess_workers,
    traffic={"timeout": SETTINGS.request_timeout_s + 10},  # the request's own deadline first
    runner_connection=STEADY_CONNECTIONS,
)
class Preprocess:
    detector_model = bentoml.models.BentoModel(stored_detector(SETTINGS.detector_model))
    generator = bentoml.depends(Generator)

    def __init__(self) -> None:
        from model_store import detector_spec
        from preprocess import DetectorSettings, create_detector
        from toonify.photos.budget import PhotoBudget
        from toonify.photos.worker import PhotoWork

        detector = create_detector(
            detector_spec(self.detector_model),
            DetectorSettings(
                detect_size=SETTINGS.detect_size,
                min_face_size=SETTINGS.min_face_size,
                cache_dir=CACHE_DIR,
            ),
        )
        self.photos = PhotoWork(detector, SETTINGS)
        # Decoding, detection and resampling release the GIL: threads work in parallel.
        self.threads = anyio.CapacityLimiter(SETTINGS.preprocess_threads)
        # Photos between prepare and finish hold their pixels: bounded (toonify/photos/budget.py).
        self.photo_budget = PhotoBudget(SETTINGS.preprocess_pixel_bytes)
        shutdown.drain_after_entry(DRAIN_GRACE_S)
        started("preprocess")

    @bentoml.api
    @answered_errors
    async def toonify_photo(
        self, photo: bytes, options: ToonifyOptions, deadline: float, level: Level, client: str
    ) -> ToonifiedPhoto:
        """Decode, orient, detect and align at the level's size; the generator toonifies the
        crops; paste back or lay them out; encode. ``client`` takes its turn with the others."""
        # Read from the header before the photo waits: an upload that is no image is refused here.
        pixel_bytes = await anyio.to_thread.run_sync(self.photos.pixel_bytes, photo, options, level)
        async with self.photo_budget.holding(pixel_bytes, client):
            job = await anyio.to_thread.run_sync(
                self.photos.prepare, photo, options, level, limiter=self.threads
            )
            toons = await call_service(
                self.generator.to_async.generate,
                deadline,
                GeneratorUnavailable,
                crops=FaceCrops(pixels=job.crops, features=job.features, deadline=deadline),
            )
            result = await anyio.to_thread.run_sync(
                self.photos.finish, job, toons, options, limiter=self.threads
            )
        metrics.observe_photo(result.timings, len(result.faces))
        return result

    @bentoml.api
    @answered_errors
    async def check_photo(
        self, photo: bytes, options: ToonifyOptions, length: int | None = None
    ) -> bool:
        """What ``toonify_photo`` would refuse from the photo's header alone (a job's photo is
        checked so at its submission); True when there is nothing to refuse. ``photo`` may be
        the first bytes of a photo ``length`` long."""
        await anyio.to_thread.run_sync(self.photos.check, photo, options, length)
        return True


@bentoml.service(
    name="toonify",
    workers=1,  # admission and billing see every request of the instance
    traffic={"timeout": SETTINGS.request_timeout_s + 10},  # our own deadline answers first
    metrics={"enabled": False, "namespace": "bentoml_service"},  # /metrics is ours: bounded
)
class Toonify:
    """Upload a photo with a face; get the face back as a cartoon."""

    preprocess = bentoml.depends(Preprocess)

    def __init__(self) -> None:
        shutdown.hold_while_running()
        started("toonify")

    @bentoml.api(route="/toonify")
    @answered_errors
    async def toonify(
        self,
        image: Annotated[Path, ContentType("image/*")],
        *,
        face_index: FaceIndex | None = DEFAULTS.face_index,
        all_faces: Flag = DEFAULTS.all_faces,
        paste_back: Flag = DEFAULTS.paste_back,
        return_aligned: Flag = DEFAULTS.return_aligned,
        format: Format = DEFAULTS.format,
        size: Size | None = DEFAULTS.size,
        quality: Quality = DEFAULTS.quality,
        response: ResponseKind = DEFAULTS.response,
    ) -> Annotated[Path, ContentType("image/*")]:
        """Toonify the largest face in a photo (or one by `face_index`, or `all_faces`), or
        the whole photo with every face toonified (`paste_back`). JSON with `response=json`.
        The photo comes as this multipart form, or as the raw body with the options as query
        parameters (toonify/edge/forms.py parses both)."""
        options = ToonifyOptions(
            face_index=face_index,
            all_faces=all_faces,
            paste_back=paste_back,
            return_aligned=return_aligned,
            format=format,
            size=size,
            quality=quality,
            response=response,
        )
        return answer_response(await self.toonified(image, options), options)

    @bentoml.api(route="/toonify/json")
    @answered_errors
    async def toonify_json(
        self,
        image: Annotated[Path, ContentType("image/*")],
        *,
        face_index: FaceIndex | None = DEFAULTS.face_index,
        all_faces: Flag = DEFAULTS.all_faces,
        paste_back: Flag = DEFAULTS.paste_back,
        return_aligned: Flag = DEFAULTS.return_aligned,
        format: Format = DEFAULTS.format,
        size: Size | None = DEFAULTS.size,
        quality: Quality = DEFAULTS.quality,
        ctx: bentoml.Context,
    ) -> ToonifyJSON:
        """As `/toonify`, answered as JSON data: the faces found, the timings and the image
        (base64), for clients that want data (`client.toonify_json(image=...)` is a dict)."""
        options = ToonifyOptions(
            face_index=face_index,
            all_faces=all_faces,
            paste_back=paste_back,
            return_aligned=return_aligned,
            format=format,
            size=size,
            quality=quality,
            response=ResponseKind.json,
        )
        result = await self.toonified(image, options)
        ctx.response.metadata.update(answer_headers(result))
        return answer_json(result)

    async def toonified(self, image: Path, options: ToonifyOptions) -> ToonifiedPhoto:
        """This request's photo through the pipeline, within its deadline and at the level the
        gateway admitted it at."""
        photo = held_photo(image) or await asyncio.to_thread(image.read_bytes)
        return await toonify_photo(
            photo, options, request_deadline(), request_level(), request_client()
        )


async def toonify_photo(
    photo: bytes, options: ToonifyOptions, deadline: float, level: Level, client: str
) -> ToonifiedPhoto:
    """The pipeline, as /toonify and a job's run both call it: the preprocessing worker's
    answer for the photo (it calls the generator with the aligned crops)."""
    preprocess = bentoml_patches.dependency_client(Toonify, "preprocess")
    return await call_service(
        preprocess.to_async.toonify_photo,
        deadline,
        photo=photo,
        options=options,
        deadline=deadline,
        level=level,
        client=client,
    )


async def check_job_photo(photo: bytes, options: ToonifyOptions) -> None:
    """A job's photo checked at submission as ``/toonify`` checks it before finding faces, by
    the preprocessing worker (the entry never decodes): a job that would be refused is refused
    at once, with the same error. Its header is in its first bytes: those are sent, and the
    whole photo only where they do not settle it (a header past them, or a refusal)."""
    deadline = time.time() + SETTINGS.request_timeout_s
    preprocess = bentoml_patches.dependency_client(Toonify, "preprocess")
    head = photo[:CHECKED_BYTES]
    try:
        await call_service(
            preprocess.to_async.check_photo,
            deadline,
            photo=head,
            options=options,
            length=len(photo),
        )
    except InputError:
        if len(head) == len(photo):
            raise
        await call_service(preprocess.to_async.check_photo, deadline, photo=photo, options=options)


def degrade_ladder() -> Ladder:
    """The ladder for the configured generator: a reduced level where it runs at the smaller
    size (its stored signature says; only metadata is read, no runtime is loaded)."""
    metadata = bentoml.models.get(SETTINGS.generator_model).info.metadata
    return Ladder.of(SETTINGS, GeneratorSignature.from_metadata(metadata).sizes)


def started(service: str) -> None:
    """This process's service is ready: the app factory it was built by still reads our request
    parsers (checked here, in the worker, not in `bentoml serve`'s main process), and /metrics
    says so."""
    bentoml_patches.check_app_factory()
    metrics.ready.labels(service).set(1)


def gateway(app, **options) -> ASGIApp:
    """The entry's gateway (toonify/edge/gateway.py), imported when the entry builds its app:
    `bentoml serve`'s main process imports this module but serves nothing."""
    from toonify.edge.gateway import Gateway

    return Gateway(app, **options)


# Errors leave every service in the documented form (the entry's gateway does it for the entry).
Generator.add_asgi_middleware(ErrorAnswers)
Preprocess.add_asgi_middleware(ErrorAnswers)
Toonify.add_asgi_middleware(
    gateway,
    settings=SETTINGS,
    ladder=degrade_ladder,
    upload_paths=("/toonify", "/toonify/json"),
    job_check=check_job_photo,
    job_pipeline=toonify_photo,
)
Toonify.mount_asgi_app(make_site(lambda: Toonify.openapi_spec.asdict()))
