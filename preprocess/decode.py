"""Bytes in, upright RGB picture out.

The order matters (each step guards the next): byte limit, open the header only, format
whitelist, pixel limit, first frame of an animation, JPEG draft (decode at reduced size),
load the pixels, EXIF orientation, then one normalised mode (8-bit RGB).
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, JpegImagePlugin, UnidentifiedImageError

from .errors import CorruptImage, ImageTooLarge, NotAnImage, UnsupportedFormat
from .orient import orient_image

logger = logging.getLogger(__name__)

# MPO is how Pillow names a JPEG whose MPF index lists more than one picture (phone cameras add
# depth maps and previews): the first picture is the photo.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF"})
_ACCEPTED_LIST = "JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF or HEIC"
# ISO-BMFF brands of HEIF stills and sequences (iPhone photos are 'heic').
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


@dataclass(frozen=True)
class DecodeSettings:
    """Limits for a public upload endpoint, and how much resolution the pipeline needs."""

    max_bytes: int = 20 * 1024 * 1024
    # 48 MP phone sensors exist; anything larger is almost always hostile or a scan.
    max_pixels: int = 50_000_000
    # JPEGs are decoded at a 1/2, 1/4 or 1/8 scale while the long side stays >= this.
    draft_long_side: int = 1600
    background: tuple[int, int, int] = (255, 255, 255)


@functools.cache
def heif_available() -> bool:
    """Register pillow-heif's opener once, if the optional extra is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _looks_like_heif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def decode_image(data: bytes, settings: DecodeSettings = DecodeSettings()) -> Image.Image:
    """Open, check and load an upload's pixels (orientation and mode untouched)."""
    image = open_image(data, settings)
    try:
        image.load()
    except Exception as exc:  # truncated data raises OSError; broken streams anything
        raise CorruptImage(
            f"The {image.format} data is truncated or damaged ({exc}). Send the photo again."
        ) from None
    return image


def decoded_size(data: bytes, settings: DecodeSettings = DecodeSettings()) -> tuple[int, int]:
    """The width and height ``decode_image`` will load (after the JPEG draft), read from the
    header alone: what the pixels will cost is known before they are decoded."""
    return open_image(data, settings).size


def check_upload_size(size: int, settings: DecodeSettings = DecodeSettings()) -> None:
    """An upload of ``size`` bytes is within the byte limit (ImageTooLarge if not)."""
    if size > settings.max_bytes:
        raise ImageTooLarge(
            f"The upload is {size / 1e6:.1f} MB; the limit is "
            f"{settings.max_bytes / 1e6:.0f} MB. Send a smaller or more compressed photo."
        )


def open_image(data: bytes, settings: DecodeSettings = DecodeSettings()) -> Image.Image:
    """Open and check an upload from its header, at the scale it will be decoded at; no pixels
    are loaded yet."""
    if not data:
        raise NotAnImage("The upload is empty: send a photo (JPEG, PNG, HEIC, ...).")
    check_upload_size(len(data), settings)
    heif_available()
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if _looks_like_heif(data):
            raise UnsupportedFormat(
                "HEIC/HEIF photos need the optional 'heif' extra on the server "
                "(pip install 'toonify-serving[heif]'); meanwhile send a JPEG or PNG."
            ) from None
        raise NotAnImage(f"This is not an image. Send a photo as {_ACCEPTED_LIST}.") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{exc}. Send a photo under {settings.max_pixels:,} pixels.") from None
    except Exception as exc:  # Pillow's plugins raise many types on malformed headers.
        raise CorruptImage(f"The image header is damaged ({exc}). Send the photo again.") from None

    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedFormat(f"{image.format} images are not accepted; send {_ACCEPTED_LIST}.")
    width, height = image.size
    if width * height > settings.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} ({width * height / 1e6:.0f} MP); the limit is "
            f"{settings.max_pixels / 1e6:.0f} MP. Send a smaller photo."
        )
    try:
        # Reaching the first frame reads on into the file (is_animated looks for a second one),
        # so damage can surface here as well as in load(): any exception is the upload's.
        if getattr(image, "is_animated", False):
            image.seek(0)
        if isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO too
            _draft_jpeg(image, settings.draft_long_side)
    except Exception as exc:  # any exception while reading on is the upload's
        raise CorruptImage(
            f"The {image.format} data is truncated or damaged ({exc}). Send the photo again."
        ) from None
    return image


def _draft_jpeg(image: Image.Image, long_side: int) -> None:
    # draft() picks the largest DCT scale whose result still covers the requested size.
    width, height = image.size
    factor = long_side / max(width, height)
    if factor <= 0.5:
        image.draft(None, (max(1, int(width * factor)), max(1, int(height * factor))))


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any decoded mode to 8-bit RGB: 16-bit scaled, alpha composited, CMYK via its ICC profile."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_rgb(image)
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if "A" in mode or "a" in mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert() clips 16-bit values to 255 (a white picture): scale instead.
    values = np.asarray(image)
    if image.mode == "F":
        grey = np.clip(values, 0, 255)
    elif image.mode.startswith("I;16") or values.max(initial=0) > 255:
        grey = np.clip(values, 0, 65535) / 257.0
    else:
        grey = values
    return Image.fromarray(np.round(grey).astype(np.uint8), "L").convert("RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError) as exc:
            logger.warning("CMYK ICC profile unusable, converting naively: %s", exc)
    return image.convert("RGB")


def read_photo(data: bytes, settings: DecodeSettings = DecodeSettings()) -> Image.Image:
    """Decode, orient and normalise an upload: the whole first stage in one call."""
    return to_rgb(orient_image(decode_image(data, settings)), settings.background)
