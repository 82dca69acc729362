"""Uploads carrying every kind of metadata Pillow writes, each marked with a byte string of its
own, to look for in answers: an answer carries the upload's pixels and nothing else of it."""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageCms, PngImagePlugin

MARKS = {
    "comment": b"COMMENT-0f3a9c",
    "exif": b"EXIF-7d21e4",
    "xmp": b"XMP-b85c10",
    "icc": b"ICC-42aa7e",
    "appn": b"APP13-c9e0d5",
    "text": b"TEXT-5be2f1",
}


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = MARKS["exif"].decode()  # ImageDescription
    exif[0x8298] = "Copyright " + MARKS["exif"].decode()
    return exif.tobytes()


def _xmp() -> bytes:
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description>' + MARKS["xmp"] + b"</rdf:Description></rdf:RDF>"
        b"</x:xmpmeta>"
    )


def _icc() -> bytes:
    # A real profile with the mark in a private tail (readers of ICC stop at its declared size).
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile + MARKS["icc"]


def with_every_metadata(image: Image.Image, fmt: str) -> bytes:
    """``image`` as ``fmt`` (JPEG, PNG, WEBP) with a comment, EXIF, XMP and an ICC profile, plus an
    APP13 segment in a JPEG and text chunks in a PNG."""
    buffer = io.BytesIO()
    common = {"exif": _exif(), "icc_profile": _icc()}
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=92, comment=MARKS["comment"], xmp=_xmp(), **common)
        data = buffer.getvalue()
        payload = b"Photoshop 3.0\x00" + MARKS["appn"]
        segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
        return data[:2] + segment + data[2:]  # right after SOI
    if fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Comment", MARKS["comment"].decode())
        text.add_text("Description", MARKS["text"].decode(), zip=True)
        text.add_itxt("XML:com.adobe.xmp", _xmp().decode())
        image.save(buffer, "PNG", pnginfo=text, **common)
        return buffer.getvalue()
    image.save(buffer, "WEBP", quality=92, xmp=_xmp(), **common)
    return buffer.getvalue()


def marks_in(data: bytes) -> list[str]:
    """The kinds of metadata whose mark ``data`` holds, as bytes or in what Pillow decodes of
    it (compressed PNG chunks)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        decoded = [v if isinstance(v, bytes) else str(v).encode() for v in image.info.values()]
    return [kind for kind, mark in MARKS.items() if any(mark in d for d in [data, *decoded])]
