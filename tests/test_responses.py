"""Request options, response layout and settings: pure functions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from responses import BadOption, ToonifyOptions, encode_image, face_sheet, shrink_to
from settings import Settings


def test_options_defaults_and_parsing():
    assert ToonifyOptions.parse({}) == ToonifyOptions()
    options = ToonifyOptions.parse(
        {"face_index": "2", "all_faces": "yes", "paste_back": "1", "format": "JPG", "size": "256",
         "response": "json", "return_aligned": "true"}
    )  # fmt: skip
    assert options.face_index == 2 and options.all_faces and options.paste_back
    assert options.format == "jpeg" and options.size == 256 and options.response == "json"


@pytest.mark.parametrize(
    "fields",
    [
        {"format": "gif"}, {"size": "8"}, {"size": "big"}, {"face_index": "-1"},
        {"all_faces": "maybe"}, {"colour": "red"}, {"response": "xml"}, {"quality": "0"},
    ],
)  # fmt: skip
def test_bad_options_are_refused(fields):
    with pytest.raises(BadOption):
        ToonifyOptions.parse(fields)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_image(fmt):
    data = encode_image(Image.new("RGB", (40, 30), "red"), fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == fmt.upper() and decoded.size == (40, 30)


def test_face_sheet_layout():
    toons = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    aligned = np.full((3, 64, 64, 3), 255, dtype=np.uint8)
    sheet = face_sheet(toons, aligned, size=32)
    assert sheet.size == (96, 64)
    assert sheet.getpixel((5, 5)) == (0, 0, 0) and sheet.getpixel((5, 40)) == (255, 255, 255)
    assert face_sheet(toons).size == (192, 64)


def test_shrink_to_keeps_aspect():
    image = Image.new("RGB", (400, 200))
    assert shrink_to(image, 100).size == (100, 50)
    assert shrink_to(image, None) is image and shrink_to(image, 1000) is image


def test_settings_from_environment():
    settings = Settings.from_env({"TOONIFY_MAX_BATCH_SIZE": "16", "TOONIFY_PROVIDERS": "CPU"})
    assert settings.max_batch_size == 16 and settings.providers == "CPU"
    assert Settings.from_env({}) == Settings()
    with pytest.raises(ValueError, match="TOONIFY_MAX_BATCH_SIZE"):
        Settings.from_env({"TOONIFY_MAX_BATCH_SIZE": "many"})
    with pytest.raises(ValueError, match="at least 2"):
        Settings.from_env({"TOONIFY_MAX_BATCH_SIZE": "1"})
