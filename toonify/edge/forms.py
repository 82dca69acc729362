"""The two forms of ``POST /toonify``, each parsed once, strictly, into the typed API's input.

BentoML picks the parser of a request (its "serde") by the request's media type and hands the
typed API what it returns. These are ours, registered by ``toonify.bentoml_patches``:

- ``PhotoForm`` for ``multipart/form-data``: the photo as the one file field ``image``, options as
  text fields (never query parameters too), bounded in count and size. BentoML's own multipart
  parser takes any number of fields of any size, keeps the first of two photos, ignores unknown
  names, and downloads a link given in place of the file.
- ``RawPhoto`` for the photo as the raw body with options as query parameters (``POST
  /toonify/raw``; any non-multipart body at ``/toonify`` too). The gateway routes them here by
  media type (``RAW_PHOTO_TYPE``): the decoder sniffs the real format from the bytes, whatever
  the client declared.

Option values are decoded as BentoML's own client sends them (JSON if it parses, else the text),
then validated once, by the typed API's own input model. Failures raise the taxonomy's errors.

The photo never touches a disk and is not copied again: the multipart parser keeps file parts
in memory (up to the upload limit, which the gateway enforces first), the request's state keeps
the bytes (``toonify.request``), and the typed API's file parameter is handed their name
(``HELD_PHOTO``) in place of BentoML's per-request temporary file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from preprocess import NotAnImage

from ..bentoml_patches import JSONSerde, MultipartSerde
from ..error_answers import record
from ..errors import BadOption, BadRequest
from ..request import HELD_PHOTO, current_request
from ..schema import (
    ToonifyOptions,
    decode_field,
    decode_query_value,
    describe_validation_error,
)

PHOTO_FIELD = "image"
RAW_PHOTO_TYPE = "application/x-toonify-photo"  # what the gateway labels a raw-body upload
MAX_FIELDS = 16  # text fields in a multipart form
MAX_FIELD_BYTES = 1024  # one text field's value

Input = TypeVar("Input", bound=BaseModel)


def held_by_the_request(data: bytes) -> Path | bytes:
    """The photo kept in the request's state, and the name the typed API's file parameter
    holds for it; the bytes themselves outside a request."""
    state = current_request()
    if state is None:
        return data
    state.photo = data
    return HELD_PHOTO


async def read_photo_form(request: Request) -> tuple[bytes, list[tuple[str, str]]]:
    """The photo and the text fields of a multipart upload: one file part named ``image`` and
    each option once as a text field, no query."""
    try:
        form = await request.form(max_files=1, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except (HTTPException, MultiPartException, ValueError) as exc:
        reason = getattr(exc, "detail", None) or getattr(exc, "message", None) or exc
        raise record(
            BadRequest(
                f"The multipart form is malformed ({reason}). Send the photo as the one file "
                f"field '{PHOTO_FIELD}' and each option once as a text field."
            )
        ) from None
    photos = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if len(photos) != 1 or form.getlist(PHOTO_FIELD) != photos:
        raise record(
            BadRequest(
                f"Send the photo as the multipart file field '{PHOTO_FIELD}' (a file part, not"
                " a text field or a link), or as the raw request body."
            )
        )
    if request.scope.get("query_string"):
        raise record(
            BadOption(
                "With a multipart form, send the options as form fields; query parameters "
                "go with the photo as the raw body (POST /toonify/raw)."
            )
        )
    fields = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    photo = await photos[0].read()
    await photos[0].close()  # its copy goes now, not when the request ends
    return photo, fields


class PhotoForm(MultipartSerde):
    async def parse_request(self, request: Request, cls: type[Input]) -> Input:
        photo, fields = await read_photo_form(request)
        return typed_input(cls, photo, fields)


class RawPhoto(JSONSerde):
    media_type = RAW_PHOTO_TYPE

    async def parse_request(self, request: Request, cls: type[Input]) -> Input:
        # Read as a stream: request.body() would keep a copy for the request's whole life.
        photo = b"".join([chunk async for chunk in request.stream()])
        return typed_input(cls, photo, request.query_params.multi_items(), decode_query_value)


# The parsers of the typed API's two forms, by media type (installed by bentoml_patches).
PARSERS: dict[str, type] = {"multipart/form-data": PhotoForm, RAW_PHOTO_TYPE: RawPhoto}


def option_values(
    known: Iterable[str], fields: Iterable[tuple[str, str]], decode: Callable[[str], Any]
) -> dict[str, Any]:
    """The options given as text ``fields``: each one ``known`` and given once, decoded as its
    form writes values (validated by the caller's model)."""
    fields, known = list(fields), list(known)
    repeated = sorted(name for name, count in Counter(n for n, _ in fields).items() if count > 1)
    if repeated:
        raise record(BadOption(f"Each option once, please: {', '.join(repeated)} given twice."))
    unknown = sorted({name for name, _ in fields} - set(known))
    if unknown:
        raise record(BadOption(f"{', '.join(unknown)}: unknown option (known: {', '.join(known)})"))
    return {name: decode(value) for name, value in fields}


def typed_input(
    cls: type[Input],
    photo: bytes,
    fields: Iterable[tuple[str, str]],
    decode: Callable[[str], Any] = decode_field,
) -> Input:
    """The typed API's input from the photo and the option fields, validated by ``cls``."""
    if not photo:
        raise record(NotAnImage("The upload is empty: send a photo (JPEG, PNG, HEIC, ...)."))
    options = option_values((n for n in cls.model_fields if n != PHOTO_FIELD), fields, decode)
    try:
        return cls.model_validate({PHOTO_FIELD: held_by_the_request(photo), **options})
    except ValidationError as exc:
        raise record(BadOption(describe_validation_error(exc))) from None


def upload_options(
    photo: bytes, fields: Iterable[tuple[str, str]], decode: Callable[[str], Any] = decode_field
) -> ToonifyOptions:
    """A job's options, refused as ``typed_input`` refuses them (the typed API's options are
    ``ToonifyOptions``'s fields, a test says), with the photo kept as the bytes it came as."""
    if not photo:
        raise record(NotAnImage("The upload is empty: send a photo (JPEG, PNG, HEIC, ...)."))
    try:
        return ToonifyOptions.model_validate(
            option_values(ToonifyOptions.model_fields, fields, decode)
        )
    except ValidationError as exc:
        raise record(BadOption(describe_validation_error(exc))) from None
