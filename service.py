"""Toonify serving: a face photo in, its cartoon out.

    client --photo--> Toonify        HTTP API (/toonify), web page (/), /metrics, /readyz
                        |--bytes---------------> Preprocess   decode, EXIF orient, detect, align
                        |<--uint8 crops + quads--             (CPU workers)
                        |--uint8 crops---------> Generator    ONNX Runtime, adaptive batching
                        |<--uint8 toon crops---               (CPU, CUDA or TensorRT)
                        |--bytes + quads + toons-> Preprocess.compose   (paste_back only)
           <--image or JSON--

Run with `bentoml serve` (all three as separate worker groups); settings: settings.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

import metrics
from cost import BillingMeter, Charge, RollingCost, profile_from_env
from model_store import detector_spec, load_generator
from preprocess import (
    AlignedFace,
    CorruptImage,
    DecodeSettings,
    DetectorSettings,
    ImageTooLarge,
    InputError,
    NoFaceFound,
    NotAnImage,
    UnsupportedFormat,
    create_detector,
)
from preprocess.pipeline import compose_photo, prepare_photo
from responses import (
    BadOption,
    ToonifyOptions,
    encode_face_sheet,
    encode_image,
    shrink_to,
    to_base64,
)
from settings import SETTINGS

logger = logging.getLogger("toonify")

# One status per failure a user can cause; 5xx only for ours.
USER_ERRORS: dict[type[Exception], int] = {
    NotAnImage: 400,
    CorruptImage: 400,
    BadOption: 400,
    ImageTooLarge: 413,
    UnsupportedFormat: 415,
    NoFaceFound: 422,
}
ERROR_BY_CODE = {error.code: error for error in USER_ERRORS}
OUTCOMES = {NoFaceFound: "no_face", ImageTooLarge: "too_large"}  # other user errors: bad_input


class GeneratorUnavailable(Exception):
    code = "generator_unavailable"


class Overloaded(Exception):
    code = "overloaded"


async def call_dependency(method, **kwargs):
    """Call another service, retrying once when a pooled connection was already closed.

    BentoML's internal client keeps idle connections longer than uvicorn's 5 s keep-alive
    (bentoml/BentoML#4971), so the first call after a pause can fail before it is sent. The
    calls here are idempotent.
    """
    try:
        return await method(**kwargs)
    except aiohttp.ClientConnectionError:
        logger.info("connection to a dependency was reset; retrying once")
        return await method(**kwargs)


def decode_settings(full_resolution: bool = False) -> DecodeSettings:
    return DecodeSettings(
        max_bytes=SETTINGS.max_bytes,
        max_pixels=SETTINGS.max_pixels,
        # paste_back returns the whole photo, so it is decoded at full size.
        draft_long_side=1 << 30 if full_resolution else SETTINGS.draft_long_side,
    )


@bentoml.service(
    name="toonify-generator",
    workers=SETTINGS.generator_workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
)
class Generator:
    model = bentoml.models.BentoModel(SETTINGS.generator_model)

    def __init__(self) -> None:
        self.generator = load_generator(
            self.model,
            threads=SETTINGS.generator_threads or None,
            providers=SETTINGS.providers,
            backend=SETTINGS.backend,
            precision=SETTINGS.precision,
            min_psnr_db=SETTINGS.min_psnr_db,
            cache_dir=SETTINGS.cache_dir or Path(tempfile.gettempdir()) / "toonify-cache",
        )
        warm_up = self.generator.warm_up()  # before /readyz says yes
        logger.info(
            "generator %s on %s: loaded in %.2f s, warm-up %.2f s",
            self.model.tag, self.generator.providers, self.generator.load_seconds, warm_up,
        )  # fmt: skip
        metrics.model_load_seconds.labels(str(self.model.tag)).set(
            self.generator.load_seconds + warm_up
        )
        metrics.ready.labels("generator").set(1)

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def generate(self, items: list[dict]) -> list[dict]:
        """Items {"crop": (S, S, 3) uint8 RGB, "sent": unix time} -> {"toon": same shape}."""
        started = time.time()
        toons = self.generator(np.stack([item["crop"] for item in items]))
        seconds = time.time() - started
        metrics.generator_batch_seconds.observe(seconds)
        metrics.generator_batch_size.observe(len(items))
        queue, generate = (metrics.stage_seconds.labels(s) for s in ("generator_queue", "generate"))
        for item in items:
            queue.observe(max(0.0, started - item["sent"]))
            generate.observe(seconds / len(items))
        return [{"toon": toon} for toon in toons]


@bentoml.service(
    name="toonify-preprocess",
    workers=SETTINGS.preprocess_workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
)
class Preprocess:
    detector_model = bentoml.models.BentoModel(SETTINGS.detector_model)

    def __init__(self) -> None:
        started = time.perf_counter()
        self.detector = create_detector(
            detector_spec(self.detector_model),
            DetectorSettings(
                detect_size=SETTINGS.detect_size, min_face_size=SETTINGS.min_face_size
            ),
        )
        load_seconds = time.perf_counter() - started
        metrics.model_load_seconds.labels(str(self.detector_model.tag)).set(load_seconds)
        metrics.ready.labels("preprocess").set(1)

    @bentoml.api
    def prepare(
        self, image: bytes, face_index: int | None = None, all_faces: bool = False,
        full_resolution: bool = False,
    ) -> dict:  # fmt: skip
        """Aligned crops and quads, or the user's error as a value (it crosses a process)."""
        try:
            prepared = prepare_photo(
                image,
                self.detector,
                decode=decode_settings(full_resolution),
                face_index=face_index,
                all_faces=all_faces,
                max_faces=SETTINGS.max_faces,
                crop_size=SETTINGS.crop_size,
                supersample=SETTINGS.supersample,
            )
        except InputError as exc:
            return {
                "error": exc.code,
                "detail": str(exc),
                "num_faces": getattr(exc, "num_faces", 0),
            }
        for stage, seconds in prepared.timings.items():
            metrics.stage_seconds.labels(stage).observe(seconds)
        metrics.faces.inc(prepared.num_faces)
        return {
            "num_faces": prepared.num_faces,
            "faces": [
                {**face.to_dict(), "quad": aligned.quad.tolist()}
                for face, aligned in zip(prepared.faces, prepared.aligned, strict=True)
            ],
            "crops": np.stack([np.asarray(aligned.image) for aligned in prepared.aligned]),
            "photo_size": list(prepared.photo_size),
            "timings": prepared.timings,
        }

    @bentoml.api
    def compose(
        self, image: bytes, quads: list, toons: np.ndarray, format: str = "jpeg",
        quality: int = 90, long_side: int | None = None,
    ) -> bytes:  # fmt: skip
        """The full photo with each toon crop pasted into its quad, encoded."""
        faces = [
            AlignedFace(image=Image.fromarray(toon), quad=np.asarray(quad, dtype=np.float64))
            for toon, quad in zip(toons, quads, strict=True)
        ]
        with metrics.stage_seconds.labels("paste_back").time():
            photo = shrink_to(compose_photo(image, faces, decode_settings(True)), long_side)
        with metrics.stage_seconds.labels("encode").time():
            return encode_image(photo, format, quality)


@dataclass
class ToonifyResult:
    body: bytes
    num_faces: int
    faces: list[dict]
    timings: dict[str, float] = field(default_factory=dict)


@bentoml.service(name="toonify", traffic={"timeout": SETTINGS.request_timeout_s})
class Toonify:
    preprocess = bentoml.depends(Preprocess)
    generator = bentoml.depends(Generator)

    def __init__(self) -> None:
        # One meter per instance: run one entry worker (it is async) so overlaps are seen.
        self.cost_profile = profile_from_env()
        self.meter = BillingMeter(
            self.cost_profile, SETTINGS.billed_vcpu, SETTINGS.billed_memory_gib
        )
        self.recent_cost = RollingCost(SETTINGS.cost_window_s)
        metrics.ready.labels("toonify").set(1)

    def bill(self, charge: Charge, images: int = 0) -> None:
        profile = self.cost_profile.name
        metrics.billed_seconds.labels(profile).inc(charge.seconds)
        metrics.billed_usd.labels(profile).inc(charge.usd)
        self.recent_cost.add(charge.usd, images)
        metrics.cost_per_1000_images_usd.labels(profile).set(self.recent_cost.per_1000_images())

    async def toonify(self, data: bytes, options: ToonifyOptions) -> ToonifyResult:
        """The whole request: preprocess, generate, then paste back or lay out the faces."""
        loop = asyncio.get_running_loop()
        prepared = await call_dependency(
            self.preprocess.to_async.prepare,
            image=data,
            face_index=options.face_index,
            all_faces=options.all_faces or options.paste_back,
            full_resolution=options.paste_back,
        )
        if "error" in prepared:
            error = ERROR_BY_CODE[prepared["error"]]
            if error is NoFaceFound:
                raise NoFaceFound(prepared["detail"], num_faces=prepared["num_faces"])
            raise error(prepared["detail"])
        timings = dict(prepared["timings"])

        started = loop.time()
        try:
            sent = time.time()
            items = [{"crop": crop, "sent": sent} for crop in prepared["crops"]]
            results = await call_dependency(self.generator.to_async.generate, items=items)
        except Exception as exc:
            logger.exception("generator call failed")
            raise GeneratorUnavailable(f"The toon generator is unavailable ({exc}).") from None
        timings["generate"] = loop.time() - started
        toons = np.stack([result["toon"] for result in results])

        started = loop.time()
        if options.paste_back:
            quads = [face["quad"] for face in prepared["faces"]]
            body = await call_dependency(
                self.preprocess.to_async.compose,
                image=data,
                quads=quads,
                toons=toons,
                format=options.format,
                quality=options.quality,
                long_side=options.size,
            )
        else:
            aligned = prepared["crops"] if options.return_aligned else None
            with metrics.stage_seconds.labels("encode").time():  # off the event loop
                body = await asyncio.to_thread(encode_face_sheet, toons, aligned, options)
        timings["encode"] = loop.time() - started
        return ToonifyResult(body, prepared["num_faces"], prepared["faces"], timings)


# --- HTTP -----------------------------------------------------------------------------------

PAGE = Path(__file__).parent / "static" / "index.html"


def error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, Overloaded):
        return JSONResponse(
            {"error": exc.code, "detail": str(exc)},
            status_code=503,
            headers={"Retry-After": str(SETTINGS.retry_after_s)},
        )
    if isinstance(exc, GeneratorUnavailable):
        return JSONResponse(
            {"error": exc.code, "detail": f"{exc} Try again in a few seconds."},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    body = {"error": exc.code, "detail": str(exc)}
    if isinstance(exc, NoFaceFound):
        body["num_faces"] = exc.num_faces
    return JSONResponse(body, status_code=USER_ERRORS[type(exc)])


async def read_upload(request: Request, limit: int) -> tuple[bytes, dict[str, str]]:
    """The photo and the options, from a multipart field ``image`` or a raw body."""
    allowance = limit + 64 * 1024  # multipart framing and option fields
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > allowance:
        raise ImageTooLarge(f"The upload is over the {limit / 1e6:.0f} MB limit.")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > allowance:
            raise ImageTooLarge(f"The upload is over the {limit / 1e6:.0f} MB limit.")
        chunks.append(chunk)
    body = b"".join(chunks)
    fields = dict(request.query_params)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise BadOption(
                "Send the photo as the multipart file field 'image', or as the raw body."
            )
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
        return await upload.read(), fields
    return body, fields


async def toonify_endpoint(request: Request) -> Response:
    service: Toonify = bentoml.get_current_service()
    if service.meter.in_flight >= SETTINGS.max_in_flight:
        # Refuse before reading the body: fast for the client, no memory held for it.
        metrics.images.labels("rejected").inc()
        return error_response(
            Overloaded(f"The service is at capacity; retry in {SETTINGS.retry_after_s} s.")
        )
    service.bill(service.meter.started())
    metrics.requests_in_flight.inc()
    outcome = "error"
    try:
        response, outcome = await toonify_response(service, request)
        return response
    finally:
        metrics.requests_in_flight.dec()
        metrics.images.labels(outcome).inc()
        service.bill(service.meter.finished(), images=1 if outcome == "ok" else 0)


async def toonify_response(service: Toonify, request: Request) -> tuple[Response, str]:
    """The response and its outcome label for the images counter."""
    try:
        data, fields = await read_upload(request, SETTINGS.max_bytes)
        options = ToonifyOptions.parse(fields)
        result = await service.toonify(data, options)
    except GeneratorUnavailable as exc:
        return error_response(exc), "error"
    except (InputError, BadOption) as exc:
        return error_response(exc), OUTCOMES.get(type(exc), "bad_input")
    except Exception:
        logger.exception("toonify request failed")
        body = {"error": "internal", "detail": "Something went wrong on our side; it is logged."}
        return JSONResponse(body, status_code=500), "error"

    timing = ", ".join(
        f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in result.timings.items()
    )
    if options.response == "json":
        body = {
            "num_faces": result.num_faces,
            "faces": [{k: v for k, v in face.items() if k != "quad"} for face in result.faces],
            "timings_ms": {k: round(v * 1000, 1) for k, v in result.timings.items()},
            "media_type": options.media_type,
            "image": to_base64(result.body),
        }
        return JSONResponse(body, headers={"Server-Timing": timing}), "ok"
    response = Response(
        result.body,
        media_type=options.media_type,
        headers={
            "X-Num-Faces": str(result.num_faces),
            "X-Face-Boxes": json.dumps([face["box"] for face in result.faces]),
            "Server-Timing": timing,
        },
    )
    return response, "ok"


async def page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html")


@contextlib.asynccontextmanager
async def billing_clock(app: Starlette):
    """Charge time every second: long busy periods and hourly instances accrue while running."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(BentoMLException):  # not instantiated yet
                service: Toonify = bentoml.get_current_service()
                service.bill(service.meter.tick())

    task = asyncio.create_task(tick())
    yield
    task.cancel()


http_app = Starlette(
    routes=[
        Route("/", page, methods=["GET"]),
        Route("/toonify", toonify_endpoint, methods=["POST"]),
    ],
    lifespan=billing_clock,
)
Toonify.mount_asgi_app(http_app, path="/")
