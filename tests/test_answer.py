"""Options, the answer's size and layout, the error taxonomy, settings: pure functions."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from preprocess import ImageTooLarge, NoFaceFound, NotAnImage, decode_image, orient_image, to_rgb
from toonify.error_answers import error_response
from toonify.errors import (
    BY_CODE,
    BadRequest,
    GeneratorUnavailable,
    Internal,
    MethodNotAllowed,
    NotReady,
    OutputTooLarge,
    Overloaded,
    error_from_body,
    from_status,
    outcome,
)
from toonify.photos.answer_image import answer_size, encode_image, face_sheet
from toonify.schema import OutputFormat, ToonifyOptions, describe_validation_error

from .metadata import marks_in, with_every_metadata


def test_options_from_form_fields_decode_like_bentoml():
    assert ToonifyOptions.from_fields({}) == ToonifyOptions()
    options = ToonifyOptions.from_fields(
        {
            "face_index": "2",
            "all_faces": "true",
            "paste_back": "true",
            "format": "JPG",
            "size": "256",
            "response": "json",
            "return_aligned": "true",
        }
    )
    assert options.face_index == 2 and options.all_faces and options.paste_back
    assert options.format is OutputFormat.jpeg and options.size == 256
    # BentoML's own client sends JSON-encoded values: '"png"'
    assert ToonifyOptions.from_fields({"format": '"png"'}).format is OutputFormat.png


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"format": "gif"}, "format"),
        ({"size": "8"}, "size"),
        ({"size": "big"}, "size"),
        ({"face_index": "-1"}, "face_index"),
        ({"all_faces": "maybe"}, "all_faces"),
        ({"colour": "red"}, "colour: unknown option"),
        ({"response": "xml"}, "response"),
        ({"quality": "0"}, "quality"),
        ({"format": "null"}, "format"),
        # Strict: integers are digits, flags are true or false.
        ({"size": "5e2"}, "size"),
        ({"size": "512.0"}, "size"),
        ({"size": " 512 "}, "size"),
        ({"paste_back": "yes"}, "paste_back"),
        ({"paste_back": "1"}, "paste_back"),
        ({"face_index": "99999999999999999999"}, "face_index"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(fields, named):
    with pytest.raises(ValidationError) as caught:
        ToonifyOptions.from_fields(fields)
    assert describe_validation_error(caught.value).startswith(named)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_encode_image(fmt):
    data = encode_image(Image.new("RGB", (40, 30), "red"), fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == fmt.value.upper() and decoded.size == (40, 30)


def test_face_sheet_layout():
    toons = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    aligned = np.full((3, 64, 64, 3), 255, dtype=np.uint8)
    sheet = face_sheet(toons, aligned, side=32)
    assert sheet.size == (96, 64)
    assert sheet.getpixel((5, 5)) == (0, 0, 0) and sheet.getpixel((5, 40)) == (255, 255, 255)
    assert face_sheet(toons, None, 64).size == (192, 64)


BUDGET = 4096 * 4096


def test_answer_size_of_face_sheets():
    options = ToonifyOptions(all_faces=True, return_aligned=True, size=256)
    assert answer_size(options, 3, (4000, 3000), 512, BUDGET) == (768, 512)
    assert answer_size(ToonifyOptions(), 1, (4000, 3000), 512, BUDGET) == (512, 512)


def test_an_amplifying_request_is_refused_before_it_costs_anything():
    """8 faces at size=4096 with aligned crops would be 32768x8192 (268 MP) from a small upload."""
    options = ToonifyOptions(all_faces=True, return_aligned=True, size=4096, format="png")
    with pytest.raises(OutputTooLarge, match="32768x8192"):
        answer_size(options, 8, (1000, 800), 512, BUDGET)
    # WebP stores 14-bit sides: 4 faces at 4096 are 16384 wide, one more than it can hold.
    webp = ToonifyOptions(all_faces=True, size=4096, format="webp")
    with pytest.raises(OutputTooLarge, match="webp"):
        answer_size(webp, 4, (1000, 800), 512, 10**9)
    assert answer_size(webp.model_copy(update={"format": "png"}), 4, (1, 1), 512, 10**9)


def test_paste_back_keeps_the_aspect_and_fits_the_budget():
    options = ToonifyOptions(paste_back=True)
    assert answer_size(options, 2, (4000, 3000), 512, BUDGET) == (4000, 3000)
    assert answer_size(options.model_copy(update={"size": 1000}), 2, (4000, 3000), 512, BUDGET) == (
        1000,
        750,
    )
    assert answer_size(options.model_copy(update={"size": 4096}), 1, (800, 600), 512, BUDGET) == (
        800,
        600,
    )  # never enlarged
    width, height = answer_size(options, 1, (8000, 6000), 512, BUDGET)  # 48 MP phone photo
    assert width * height <= BUDGET and abs(width / height - 4 / 3) < 0.01


def test_every_error_has_one_status_and_the_documented_body():
    response = error_response(NoFaceFound("none here", num_faces=0))
    assert response.status_code == 422
    assert json.loads(response.body) == {"error": "no_face", "detail": "none here", "num_faces": 0}
    busy = error_response(Overloaded(retry_after=7))
    assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
    assert error_response(ImageTooLarge("big")).status_code == 413
    assert error_response(NotAnImage("text")).status_code == 400
    # An unexpected exception is our bug: a 500 that does not tell the client to retry.
    bug = error_response(KeyError("oops"))
    assert bug.status_code == 500 and "retry-after" not in bug.headers
    assert json.loads(bug.body)["error"] == "internal"
    assert len(BY_CODE) == len({cls.code for cls in BY_CODE.values()})


def test_errors_cross_services_as_themselves():
    sent = NoFaceFound("face_index 3 asked for", num_faces=1)
    rebuilt = error_from_body(422, error_response(sent).body.decode())
    assert type(rebuilt) is NoFaceFound and rebuilt.num_faces == 1 and str(rebuilt) == str(sent)
    unavailable = error_from_body(
        503, json.dumps({"error": "generator_unavailable", "detail": "x"})
    )
    assert type(unavailable) is GeneratorUnavailable
    # Not ours: BentoML's plain 500 is a bug below us, its 503 a part restarting.
    assert type(error_from_body(500, "Internal Server Error")) is Internal
    assert error_from_body(503, '{"error": "process is overloaded"}').status == 503


def test_answers_that_are_not_ours_mean_one_thing_wherever_they_are_read():
    """One table for a status without our body: a dependency's and the router's alike."""
    for status in (400, 404, 405, 408, 410, 413, 418, 429, 500, 502, 503, 504):
        assert type(error_from_body(status, "plain text")) is type(from_status(status))
    assert type(from_status(418)) is BadRequest and type(from_status(502)) is Internal
    assert type(from_status(503)) is NotReady
    assert type(from_status(413)) is ImageTooLarge  # a request too large, not our output


def test_a_405_carries_the_methods_the_path_takes():
    refusal = error_response(MethodNotAllowed("Use POST.", allow=("GET", "DELETE")))
    assert refusal.status_code == 405 and refusal.headers["allow"] == "GET, DELETE"


def test_outcome_labels():
    assert outcome(200, None) == "ok"
    assert outcome(422, "no_face") == "no_face"
    assert outcome(413, "output_too_large") == "too_large"
    assert outcome(503, "overloaded") == "rejected"
    assert outcome(400, "bad_option") == "bad_input"
    assert outcome(500, "internal") == "error" and outcome(504, "timeout") == "error"


def test_settings_from_environment(settings_from):
    settings = settings_from({"TOONIFY_MAX_BATCH_SIZE": "16", "TOONIFY_PROVIDERS": "CPU"})
    assert settings.max_batch_size == 16 and settings.providers == "CPU"
    assert settings_from({}) == settings_from({"TOONIFY_MAX_RECEIVING": "64"})
    assert settings_from({"TOONIFY_MAX_RECEIVING": "0"}).max_receiving == 64  # 0: derived
    assert settings_from({"TOONIFY_MAX_IN_FLIGHT": "4"}).max_receiving == 16
    with pytest.raises(ValueError, match="TOONIFY_MAX_BATCH_SIZE"):
        settings_from({"TOONIFY_MAX_BATCH_SIZE": "many"})
    typed = settings_from(
        {
            "TOONIFY_DEGRADE": "off",
            "TOONIFY_QUEUE_URL": "redis://127.0.0.1:6379/0",
            "TOONIFY_WEBHOOK_SECRET": "whsec_c2VjcmV0",
            "TOONIFY_CACHE_DIR": "",
        }
    )
    assert typed.degrade is False and typed.cache_dir is None
    assert str(typed.queue_url) == "redis://127.0.0.1:6379/0"
    assert "whsec" not in repr(typed)  # a secret stays out of logs and tracebacks
    with pytest.raises(ValueError, match="TOONIFY_BACKEND"):
        settings_from({"TOONIFY_BACKEND": "tensorflow"})


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("TOONIFY_MAX_INFLIGHT", "TOONIFY_MAX_IN_FLIGHT"),
        ("TOONIFY_COST_VCPU_SECONDS_USD", "TOONIFY_COST_VCPU_SECOND_USD"),
        ("TOONIFY_COST_PROFLE", "TOONIFY_COST_PROFILE"),
    ],
)
def test_a_misspelt_setting_stops_the_start_naming_the_closest(settings_from, name, closest):
    with pytest.raises(ValueError, match=f"unknown setting {name} \\(did you mean {closest}"):
        settings_from({name: "4"})


def test_the_price_and_the_tools_names_are_settings_too(settings_from):
    readers = {"TOONIFY_COST_PROFILE": "h100-hourly", "TOONIFY_TEST_ASSETS": "/x"}
    settings = settings_from({**readers, "TOONIFY_COST_HOURLY_USD": "2.5"})
    assert settings.cost.profile == "h100-hourly" and settings.cost.hourly_usd == 2.5
    with pytest.raises(ValueError, match="TOONIFY_COST_HOURLY_USD"):
        settings_from({"TOONIFY_COST_HOURLY_USD": "cheap"})


@pytest.mark.parametrize("upload_format", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_an_answer_made_from_the_photo_carries_none_of_its_metadata(upload_format, fmt):
    """A pasted-back answer is the upload's own decoded pixels: what Pillow read of the upload
    (comment, EXIF, XMP, ICC, APPn, text chunks) must not be written out again."""
    upload = with_every_metadata(Image.new("RGB", (96, 64), "teal"), upload_format)
    assert len(marks_in(upload)) >= 3
    photo = to_rgb(orient_image(decode_image(upload)))
    assert marks_in(encode_image(photo, fmt)) == []
