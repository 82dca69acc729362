"""Successful answers as HTTP, in one place: the answer to POST /toonify (the image with what
went into it in headers, or JSON), and the JSON of the other routes (a job's status, the API
document). Error answers are toonify/error_answers.py's."""

from __future__ import annotations

import base64
import json

from starlette.responses import JSONResponse, Response

from ..schema import ResponseKind, ToonifiedPhoto, ToonifyJSON, ToonifyOptions


def json_answer(data: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in timings.items())


def answer_headers(result: ToonifiedPhoto) -> dict[str, str]:
    """What went into the answer, in headers that every form of it carries."""
    return {
        "Server-Timing": server_timing(result.timings),
        "X-Service-Level": result.level.value,
        "X-Generated-Size": str(result.generated_size),
    }


def answer_json(result: ToonifiedPhoto) -> ToonifyJSON:
    return ToonifyJSON(
        num_faces=result.num_faces,
        faces=result.faces,
        level=result.level,
        generated_size=result.generated_size,
        timings_ms={stage: round(s * 1000, 1) for stage, s in result.timings.items()},
        image_type=result.image_type,
        image=base64.b64encode(result.image).decode("ascii"),
    )


def answer_response(result: ToonifiedPhoto, options: ToonifyOptions) -> Response:
    """The answer of ``POST /toonify``: the image with headers, or JSON with ``response=json``."""
    headers = answer_headers(result)
    if options.response is ResponseKind.json:
        return JSONResponse(answer_json(result).model_dump(mode="json"), headers=headers)
    extension = options.format.value.replace("jpeg", "jpg")
    headers |= {
        "X-Num-Faces": str(result.num_faces),
        "X-Face-Boxes": json.dumps([face.box for face in result.faces]),
        "Content-Disposition": f'inline; filename="toon.{extension}"',
    }
    return Response(result.image, media_type=result.image_type, headers=headers)
