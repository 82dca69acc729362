"""Decode and orient: real encoders make every input, hostile ones included."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from preprocess import (
    CorruptImage,
    DecodeSettings,
    ImageTooLarge,
    InputError,
    NotAnImage,
    Orientation,
    UnsupportedFormat,
    decode_image,
    read_photo,
)

from .conftest import asset


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# Stored pixels for each EXIF orientation, written from the TIFF/EXIF definition of where row 0
# and column 0 of the stored image are displayed (not from Pillow's own table).
STORED_FROM_DISPLAY = {
    1: lambda d: d,
    2: lambda d: d[:, ::-1],
    3: lambda d: d[::-1, ::-1],
    4: lambda d: d[::-1, :],
    5: lambda d: d.transpose(1, 0, 2),
    6: lambda d: d[:, ::-1].transpose(1, 0, 2),
    7: lambda d: d[::-1, ::-1].transpose(1, 0, 2),
    8: lambda d: d[::-1, :].transpose(1, 0, 2),
}


@pytest.mark.parametrize("orientation", sorted(STORED_FROM_DISPLAY))
def test_every_exif_orientation_comes_back_upright(astronaut, orientation):
    display = np.asarray(astronaut)[:, 64:448]  # not square, so a missed rotation shows
    stored = Image.fromarray(np.ascontiguousarray(STORED_FROM_DISPLAY[orientation](display)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = read_photo(encode(stored, "PNG", exif=exif.tobytes()))
    assert photo.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(photo), display)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_real_phone_orientation_tags(orientation):
    upright = np.asarray(read_photo(asset("faces/hopper.jpg").read_bytes()), dtype=np.int16)
    rotated = read_photo(asset(f"faces/hopper_orientation_{orientation}.jpg").read_bytes())
    assert rotated.size == (upright.shape[1], upright.shape[0])
    assert np.abs(np.asarray(rotated, dtype=np.int16) - upright).mean() < 8  # JPEG re-encoding


def test_large_jpeg_is_decoded_at_draft_size(astronaut):
    big = astronaut.resize((4032, 3024))
    photo = read_photo(encode(big, "JPEG", quality=90))
    assert photo.size == (2016, 1512)
    full = read_photo(encode(big, "JPEG", quality=90), DecodeSettings(draft_long_side=4032))
    assert full.size == (4032, 3024)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotAnImage),
        (b"hello, this is plain text and not a picture\n" * 20, NotAnImage),
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", NotAnImage),
    ],
    ids=["empty", "text", "pdf"],
)
def test_not_an_image(data, error):
    with pytest.raises(error) as caught:
        read_photo(data)
    assert "send" in str(caught.value).lower()


def test_truncated_jpeg_is_corrupt(astronaut):
    data = encode(astronaut, "JPEG", quality=90)
    with pytest.raises(CorruptImage):
        read_photo(data[: len(data) // 2])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def test_decompression_bomb_is_too_large():
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    assert len(bomb) < 200
    with pytest.raises(ImageTooLarge):
        read_photo(bomb)


def test_pixel_and_byte_limits(astronaut):
    data = encode(astronaut, "PNG")
    with pytest.raises(ImageTooLarge):
        read_photo(data, DecodeSettings(max_pixels=512 * 511))
    with pytest.raises(ImageTooLarge):
        read_photo(data, DecodeSettings(max_bytes=len(data) - 1))


def test_unsupported_format(astronaut):
    with pytest.raises(UnsupportedFormat):
        read_photo(encode(astronaut, "TGA"))


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    photo = read_photo(buffer.getvalue())
    assert photo.size == (64, 48)
    assert photo.getpixel((10, 10)) == (255, 0, 0)


def test_a_gif_that_ends_inside_its_second_frame_is_corrupt():
    """Found by the fuzzer: is_animated reads the second frame's header and hits the end of the
    file (Pillow raises IndexError there)."""
    buffer = io.BytesIO()
    Image.new("P", (32, 32), 3).save(buffer, "GIF")
    body = buffer.getvalue()[:-1] + b",\x00\x00\x00\x00\x20\x00\x20\x00\x00"
    with pytest.raises(CorruptImage):
        read_photo(body)


def test_multi_picture_jpeg_is_a_jpeg(astronaut):
    """Phone cameras write MPO: a JPEG whose index lists more pictures (depth map, preview)."""
    big = astronaut.resize((4032, 3024))
    buffer = io.BytesIO()
    big.save(buffer, "MPO", save_all=True, append_images=[Image.new("RGB", (640, 480), "blue")])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    photo = read_photo(buffer.getvalue())
    assert photo.size == (2016, 1512)  # the first picture, decoded at draft size like a JPEG
    assert np.abs(np.asarray(photo.resize((512, 512)), dtype=float) - astronaut).mean() < 10


def test_16_bit_png_is_scaled_not_white():
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (32, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = np.asarray(read_photo(data))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert pixels[0, -1].tolist() == [255, 255, 255]
    assert 120 < pixels.mean() < 135


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red ink mix
    photo = read_photo(encode(cmyk, "JPEG", quality=95))
    red, green, blue = photo.getpixel((16, 16))
    assert photo.mode == "RGB" and red > 200 and green < 50 and blue < 50


def test_palette_png_transparency_is_composited_on_background():
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 8, 16))  # left half red, right half index 0 = transparent black
    photo = read_photo(encode(image, "PNG", transparency=0))
    assert photo.getpixel((2, 2)) == (255, 0, 0)
    assert photo.getpixel((12, 2)) == (255, 255, 255)
    grey = read_photo(encode(image, "PNG", transparency=0), DecodeSettings(background=(9, 9, 9)))
    assert grey.getpixel((12, 2)) == (9, 9, 9)


def test_heic_when_pillow_heif_is_installed(astronaut):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    photo = read_photo(encode(astronaut, "HEIF", quality=90))
    assert photo.size == astronaut.size
    assert np.abs(np.asarray(photo, dtype=np.int16) - np.asarray(astronaut)).mean() < 6


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_damaged_bytes_raise_only_input_errors(astronaut, fmt):
    """Seeded mutations of real files: each either decodes or raises an InputError."""
    original = encode(astronaut.resize((96, 96)), fmt)
    rng = random.Random(fmt)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            photo = read_photo(bytes(data))
        except InputError:
            continue
        assert photo.mode == "RGB"


@pytest.mark.parametrize("orientation", sorted(STORED_FROM_DISPLAY))
def test_orientation_maps_upright_pixels_to_where_they_are_stored(astronaut, orientation):
    display = np.asarray(astronaut)[:, 64:448]
    stored = np.ascontiguousarray(STORED_FROM_DISPLAY[orientation](display))
    height, width = stored.shape[:2]
    rng = np.random.default_rng(orientation)
    points = np.column_stack(
        [rng.integers(0, display.shape[1], 200), rng.integers(0, display.shape[0], 200)]
    )
    mapped = Orientation(orientation).to_stored(points, (width, height)).round().astype(int)
    np.testing.assert_array_equal(
        stored[mapped[:, 1], mapped[:, 0]], display[points[:, 1], points[:, 0]]
    )
    assert Orientation(orientation).upright_size((width, height)) == display.shape[1::-1]


def test_unreadable_or_unknown_orientation_tags_are_upright(astronaut):
    for value in (0, 9, 65535):
        exif = Image.Exif()
        exif[0x0112] = value
        photo = decode_image(encode(astronaut, "PNG", exif=exif.tobytes()))
        assert Orientation.of(photo) == Orientation(1)
