"""The entry service's pages: the web page at /, the API document and its Swagger UI, /metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from .. import metrics
from ..bentoml_patches import swagger_ui_page
from . import openapi
from .responses import json_answer

PAGE = Path(__file__).resolve().parents[2] / "static" / "index.html"


def make_site(openapi_document: Callable[[], dict]) -> Starlette:
    """``openapi_document`` is BentoML's, for the service these pages belong to."""

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html")

    swagger_page = swagger_ui_page()  # BentoML's own Swagger UI, checked now

    async def swagger_ui(request: Request) -> Response:
        return FileResponse(swagger_page)

    async def document(request: Request) -> Response:
        return json_answer(openapi.complete(openapi_document()))

    async def prometheus(request: Request) -> Response:
        body = await anyio.to_thread.run_sync(metrics.exposition)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/docs", swagger_ui, methods=["GET"]),
            Route("/docs.json", document, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ]
    )
