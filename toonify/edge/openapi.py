"""The OpenAPI document BentoML derives from the typed API, completed with what HTTP adds.

BentoML documents ``POST /toonify`` from its typed signature: the multipart form, each option
with its type, enum or range, and the image answer. The gateway in front of it also accepts the
photo as the raw body with the options as query parameters, answers JSON with
``response=json``, and answers errors in one documented form; this adds those to the document.
"""

from __future__ import annotations

import copy

from ..errors import INPUT_STATUS, SERVICE_ERRORS
from ..schema import ErrorBody, JobStatus, ToonifyJSON

REF = "#/components/schemas/{model}"
HEADERS = {
    "X-Num-Faces": "faces found in the photo",
    "X-Face-Boxes": "JSON list of [x1, y1, x2, y2] per face in the answer, in photo pixels",
    "Server-Timing": "milliseconds per stage: decode, orient, detect, align, generator_queue, "
    "generate, paste_back, encode; total: arrival to answer",
}


def error_codes() -> dict[int, list[str]]:
    codes: dict[int, list[str]] = {}
    for error, status in INPUT_STATUS.items():
        codes.setdefault(status, []).append(error.code)
    for error in SERVICE_ERRORS:
        codes.setdefault(error.status, []).append(error.code)
    return dict(sorted(codes.items()))


def complete(spec: dict, image_path: str = "/toonify", json_path: str = "/toonify/json") -> dict:
    """BentoML's document with the raw-body form of each upload API at ``PATH/raw`` (the photo as
    the body, options as query parameters), the JSON answer, and every error answer."""
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, ToonifyJSON, JobStatus):
        document = model.model_json_schema(ref_template=REF)
        schemas.update(document.pop("$defs", {}))
        schemas[model.__name__] = document
    for path in (image_path, json_path):
        form = spec["paths"][path]["post"]
        form["responses"] = with_errors(form["responses"])
    answer = spec["paths"][image_path]["post"]["responses"]["200"]
    answer["content"]["application/json"] = {"schema": {"$ref": REF.format(model="ToonifyJSON")}}
    answer["description"] = "The toon: an image, or JSON with `response=json`."
    answer["headers"] = {
        name: {"description": text, "schema": {"type": "string"}} for name, text in HEADERS.items()
    }
    paths = {}
    for path, item in spec["paths"].items():
        paths[path] = item
        if path in (image_path, json_path):
            form = item["post"]
            # A form field is JSON when it parses (BentoML's client sends '512', '"png"', and
            # 'null' for an option left at its default of none): say that null is taken.
            schema = form["requestBody"]["content"]["multipart/form-data"]["schema"]
            for field in schema["properties"].values():
                if "default" in field and field["default"] is None:
                    field["nullable"] = True
            form["requestBody"]["description"] = (
                f"The photo as the multipart file field `image`, options as form fields. The raw "
                f"body form is `POST {path}/raw`."
            )
            paths[f"{path}/raw"] = {"post": raw_body_form(form, path)}
            for operation in (form, paths[f"{path}/raw"]["post"]):
                with_prefer(operation)
    paths.update(job_paths(spec["paths"][image_path]["post"], paths[f"{image_path}/raw"]["post"]))
    spec["paths"] = paths
    return spec


PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`respond-async`: put the photo in line and answer 202 with the job at once "
    "(as `POST /jobs`); `wait=N`: the answer if it is ready within N seconds (at most the request "
    "timeout), else the 202. `Preference-Applied` says which was honoured (RFC 7240).",
    "schema": {"type": "string", "examples": ["respond-async", "respond-async, wait=10"]},
}


def with_prefer(operation: dict) -> None:
    """An upload API's ``Prefer`` header (job_desk.py): the same upload, answered as a job."""
    operation["parameters"] = [*operation.get("parameters", []), PREFER]
    status = {"application/json": {"schema": {"$ref": REF.format(model="JobStatus")}}}
    operation["responses"]["202"] = {
        "description": "with `Prefer`: queued; `Location` is the job's status URL",
        "content": status,
        "headers": {
            "Location": {"schema": {"type": "string"}},
            "Preference-Applied": {"schema": {"type": "string"}},
        },
    }


def job_paths(form: dict, raw: dict) -> dict:
    """The job routes (toonify/edge/job_desk.py): what /toonify takes, answered later."""
    status = {"application/json": {"schema": {"$ref": REF.format(model="JobStatus")}}}
    accepted = {
        "202": {
            "description": "queued; `Location` is the job's status URL",
            "content": status,
            "headers": {"Location": {"schema": {"type": "string"}}},
        }
    }
    job_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]

    webhook = {
        "name": "webhook",
        "in": "query",
        "required": False,
        "description": "an https:// URL told when the job ends (a public address; signed per "
        "Standard Webhooks: docs/jobs.md)",
        "schema": {"type": "string", "format": "uri", "maxLength": 1024},
    }

    def submit(operation: dict, name: str) -> dict:
        submitted = copy.deepcopy(operation)
        submitted["operationId"] = name
        kept = [each for each in submitted.get("parameters", []) if each["name"] != "Prefer"]
        submitted["parameters"] = [*kept, webhook]
        submitted["summary"] = "Queue a toonification; the answer waits at its result URL"
        submitted["responses"] = {**accepted, **with_errors({"200": {}})}
        del submitted["responses"]["200"]
        return {"post": submitted}

    def errors_only() -> dict:
        answers = with_errors({"200": {}})
        del answers["200"]
        return answers

    return {
        "/jobs": submit(form, "submit_job"),
        "/jobs/raw": submit(raw, "submit_job__raw"),
        "/jobs/{id}": {
            "get": {
                "operationId": "job_status",
                "parameters": job_id,
                "responses": {
                    "200": {"description": "the job", "content": status},
                    **errors_only(),
                },
            },
            "delete": {
                "operationId": "delete_job",
                "parameters": job_id,
                "responses": {"204": {"description": "photo and answer deleted"}, **errors_only()},
            },
        },
        "/jobs/{id}/result": {
            "get": {
                "operationId": "job_result",
                "parameters": job_id,
                "responses": {
                    "200": copy.deepcopy(form["responses"]["200"]),
                    "202": {
                        "description": "not done yet: retry after Retry-After",
                        "content": status,
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    },
                    **errors_only(),
                },
            }
        },
    }


def raw_body_form(form: dict, path: str) -> dict:
    """The same API with the photo as the raw body and the options as query parameters."""
    operation = copy.deepcopy(form)
    fields = form["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    operation["operationId"] = f"{form.get('operationId', path.strip('/'))}__raw"
    operation["requestBody"] = {
        "required": True,
        "description": f"The photo as the body (as `POST {path}` takes it in a form).",
        "content": {
            "image/*": {
                "schema": {"type": "string", "format": "binary", "description": "the photo"}
            }
        },
    }
    operation["parameters"] = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": schema.get("description", name),
            "schema": {k: v for k, v in schema.items() if k not in ("title", "description")},
        }
        for name, schema in fields.items()
        if name != "image"
    ]
    return operation


def with_errors(responses: dict) -> dict:
    """The 200 answer and every error answer, each in the documented form."""
    completed = {"200": {str(status): value for status, value in responses.items()}["200"]}
    for status, codes in error_codes().items():
        response = {
            "description": "error: " + ", ".join(codes),
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
        }
        if status in (503, 504):
            retry = {"description": "seconds to wait", "schema": {"type": "integer"}}
            response["headers"] = {"Retry-After": retry}
        completed[str(status)] = response
    return completed
