"""The typed values of the API and of the calls between services.

``ToonifyOptions`` is what a request may ask for; its field types are the typed parameters of
``POST /toonify`` too, so the API's validation and the OpenAPI document apply the same rules.
Crops and toons cross processes as uint8 NHWC RGB arrays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from preprocess.features import COLUMNS, ROWS

from .levels import Level


class OutputFormat(StrEnum):
    jpeg = "jpeg"
    png = "png"
    webp = "webp"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"


class ResponseKind(StrEnum):
    image = "image"
    json = "json"


def _format_name(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        return "jpeg" if value == "jpg" else value
    return value


# Integers and flags are strict: "512.0", "5e2" or " 512 " is not a size, "yes" is not a flag.
FaceIndex = Annotated[
    int,
    Strict(),
    Field(ge=0, le=1023, description="which face, counting from 0, largest first"),
]
Size = Annotated[
    int,
    Strict(),
    Field(
        ge=16,
        le=4096,
        description="side of each face image; with paste_back, the photo's long side",
    ),
]
Quality = Annotated[int, Strict(), Field(ge=1, le=100, description="JPEG and WebP quality")]
Flag = Annotated[bool, Strict(), Field(description="true or false")]
Format = Annotated[OutputFormat, BeforeValidator(_format_name)]


class ToonifyOptions(BaseModel):
    """What one request asks for. Unknown names are refused, so a misspelt option is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    face_index: FaceIndex | None = None  # None: the largest face
    all_faces: Flag = False
    paste_back: Flag = False
    return_aligned: Flag = False
    format: Format = OutputFormat.jpeg
    size: Size | None = None
    quality: Quality = 90
    response: ResponseKind = ResponseKind.image

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> ToonifyOptions:
        """Options from text fields, decoded as the API's forms decode them."""
        return cls.model_validate({name: decode_field(text) for name, text in fields.items()})


DEFAULTS = ToonifyOptions()


def decode_query_value(text: str) -> Any:
    """One option's text from a query string: digits are an integer, true and false a flag,
    anything else text (which the strict types then accept or refuse)."""
    if text.isascii() and text.isdigit():
        return int(text)
    return {"true": True, "false": False}.get(text, text)


def decode_field(text: str) -> Any:
    """One option's text as BentoML decodes a form field (its own client sends JSON: '"png"',
    'true', '512'): JSON if it parses, else the text. Padded text stays text, so the strict
    types refuse it."""
    if text != text.strip():
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def describe_validation_error(error: ValidationError) -> str:
    """One sentence per problem, naming the option: what a person can act on."""
    parts = []
    for problem in error.errors(include_url=False, include_context=False):
        name = ".".join(str(part) for part in problem["loc"]) or "options"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            known = ", ".join(ToonifyOptions.model_fields)
            message = f"unknown option (known: {known})"
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


def _rgb_images(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 RGB images, got {array.shape} {array.dtype}")
    return array


# (N, H, W, 3) uint8 RGB: four times smaller than float32 on the wire.
RGBImages = Annotated[
    np.ndarray,
    PlainValidator(_rgb_images),
    WithJsonSchema({"type": "array", "description": "(N, H, W, 3) uint8 RGB images"}),
]


def _feature_rows(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != np.float32 or array.shape[1:] != (len(ROWS), COLUMNS):
        raise ValueError(
            f"expected (N, {len(ROWS)}, {COLUMNS}) float32 feature rows, got "
            f"{array.shape} {array.dtype}"
        )
    return array


# (N, 5, 8) float32: where each crop's eyes, nose, mouth and jaw are (preprocess/features.py).
FeatureRows = Annotated[
    np.ndarray,
    PlainValidator(_feature_rows),
    WithJsonSchema({"type": "array", "description": "(N, 5, 8) float32 feature rows"}),
]


class FaceCrops(BaseModel):
    """Aligned crops of one photo, on their way to the generator, with where their features
    are (a generator that takes them follows each face; others ignore them)."""

    pixels: RGBImages
    features: FeatureRows
    deadline: float  # unix time after which nobody waits for the answer

    @model_validator(mode="after")
    def _one_row_per_crop(self) -> FaceCrops:
        if len(self.features) != len(self.pixels):
            raise ValueError(f"{len(self.features)} feature rows for {len(self.pixels)} crops")
        return self


class Toons(BaseModel):
    """The generator's answer for one photo's crops, and where its time went."""

    pixels: RGBImages
    queued_s: float  # waiting for the batch before this one to finish
    generate_s: float  # this photo's share of its batch
    batch_size: int
    generated_size: int  # the side the model ran the crops at


class FaceInfo(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in the upright photo's pixels")
    score: float
    landmarks: list[list[float]] = Field(description="eyes, nose, mouth corners (x, y)")


class ToonifiedPhoto(BaseModel):
    """The preprocessing worker's answer: the encoded image and what went into it."""

    image: bytes
    image_type: str  # a media type; not "media_type", which BentoML's IO models reserve
    level: Level = Field(description="the degrade ladder's level that served it")
    generated_size: int = Field(description="side of the face images the generator made")
    num_faces: int = Field(description="faces found in the photo, before selection")
    faces: list[FaceInfo] = Field(description="the faces in the answer, left to right")
    timings: dict[str, float] = Field(description="seconds per stage")


class ToonifyJSON(BaseModel):
    """The answer with ``response=json``."""

    num_faces: int
    faces: list[FaceInfo]
    level: Level = Field(
        description="full, or reduced: the service was saturated and generated the faces at "
        "generated_size, then scaled them to the answer's size"
    )
    generated_size: int
    timings_ms: dict[str, float]
    image_type: str = Field(description="the media type of the image, e.g. image/jpeg")
    image: str = Field(description="the answer image, base64")


class ErrorBody(BaseModel):
    """Every error answer: a stable code and a sentence that says what to do."""

    error: str = Field(description="stable code, e.g. no_face, too_large, overloaded")
    detail: str = Field(description="what went wrong and what to do about it")
    num_faces: int | None = Field(None, description="with no_face: faces found")


class JobStatus(BaseModel):
    """A job, as ``POST /jobs`` and ``GET /jobs/{id}`` answer it."""

    id: str = Field(description="128 random bits: the only key to the job; keep it private")
    status: str = Field(description="queued, running, done, failed or expired")
    position: int | None = Field(description="jobs ahead of this one while it is queued")
    eta_s: float | None = Field(
        description="seconds until it is done, from the measured drain rate (null until measured)"
    )
    level: str | None = Field(description="the level it was served at, once done")
    error: str | None = Field(description="the error code, if it failed")
    status_url: str
    result_url: str
