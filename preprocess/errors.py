"""Errors a user can cause with what they upload.

Each class is one failure with a stable ``code``; the HTTP layer maps each to one status.
The message says what to do about it, because it is shown to the person who uploaded.
"""

from __future__ import annotations


class InputError(Exception):
    """Base class: the upload cannot be toonified, and it is the upload's fault."""

    code = "bad_input"


class NotAnImage(InputError):
    """The bytes are empty or not a picture in any format we know."""

    code = "not_an_image"


class UnsupportedFormat(InputError):
    """A real picture, but in a format the service does not accept."""

    code = "unsupported_format"


class CorruptImage(InputError):
    """The header names an accepted format, but the data is truncated or damaged."""

    code = "corrupt_image"


class ImageTooLarge(InputError):
    """Over the byte limit or the pixel limit."""

    code = "too_large"


class NoFaceFound(InputError):
    """The picture decoded, but no face (or not the requested one) was found in it."""

    code = "no_face"

    def __init__(self, message: str, num_faces: int = 0) -> None:
        super().__init__(message)
        self.num_faces = num_faces
