"""The preprocessing worker's part of a request: two calls on either side of the generator.

``prepare`` decodes the photo once (at the resolution the answer needs), orients it, finds and
aligns the faces at the size of the request's level, and checks the answer's size before anything
is generated. ``finish`` pastes
the toons back into that same decoded photo, or lays them out side by side, and encodes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from preprocess import DecodeSettings, FaceDetector, check_upload_size, decoded_size
from preprocess.pipeline import PreparedPhoto, prepare_photo

from ..levels import Level, level_settings
from ..schema import FaceInfo, ToonifiedPhoto, ToonifyOptions, Toons
from ..settings import Settings
from .answer_image import answer_size, encode_image, face_sheet, paste_answer

FULL_RESOLUTION = 1 << 30


@dataclass(frozen=True, eq=False)
class PhotoJob:
    prepared: PreparedPhoto
    answer_size: tuple[int, int]
    level: Level

    @property
    def crops(self) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB: what goes to the generator."""
        return np.stack([np.asarray(face.image) for face in self.prepared.aligned])

    @property
    def features(self) -> np.ndarray:
        """(N, 5, 8) float32: where each crop's features are, for the generator."""
        return self.prepared.features


class PhotoWork:
    def __init__(self, detector: FaceDetector, settings: Settings) -> None:
        self.detector = detector
        self.settings = settings

    def decode_settings(self, options: ToonifyOptions, level: Level) -> DecodeSettings:
        settings = self.settings
        if options.paste_back:  # the answer is the photo itself: decode what it needs
            draft = max(options.size or FULL_RESOLUTION, settings.draft_long_side)
        else:
            draft = level_settings(settings, level).draft_long_side
        return DecodeSettings(settings.max_bytes, settings.max_pixels, draft)

    def pixel_bytes(self, data: bytes, options: ToonifyOptions, level: Level = Level.full) -> int:
        """The memory the photo's pixels hold from ``prepare`` to ``finish``, from its header
        alone (an upload that is not an image raises its InputError here): Pillow keeps an RGB
        pixel in 4 bytes, and a pasted-back answer is made from one more copy of the photo."""
        width, height = decoded_size(data, self.decode_settings(options, level))
        return 4 * width * height * (2 if options.paste_back else 1)

    def check(self, data: bytes, options: ToonifyOptions, length: int | None = None) -> None:
        """What ``prepare`` would refuse before it finds a face, from the header alone: not an
        image, a format not decoded, too many pixels, an answer over the output budget (for one
        face: how many there are is known only once they are found). ``data`` may be the
        photo's first bytes, ``length`` long in all."""
        settings = self.settings
        full = DecodeSettings(settings.max_bytes, settings.max_pixels, FULL_RESOLUTION)
        check_upload_size(len(data) if length is None else length, full)
        size = decoded_size(data, full)  # a rotation changes neither the pixels nor the long side
        answer_size(options, 1, size, settings.crop_size, settings.max_output_pixels)

    def prepare(self, data: bytes, options: ToonifyOptions, level: Level = Level.full) -> PhotoJob:
        settings = self.settings
        at_level = level_settings(settings, level)
        prepared = prepare_photo(
            data,
            self.detector,
            decode=self.decode_settings(options, level),
            face_index=options.face_index,
            all_faces=options.all_faces or options.paste_back,
            max_faces=settings.max_faces,
            crop_size=at_level.crop_size,
            supersample=at_level.supersample,
        )
        # The answer's size is the full level's at every level.
        size = answer_size(
            options,
            len(prepared.faces),
            prepared.size,
            settings.crop_size,
            settings.max_output_pixels,
        )
        return PhotoJob(prepared, size, level)

    def finish(self, job: PhotoJob, toons: Toons, options: ToonifyOptions) -> ToonifiedPhoto:
        timings = {
            **job.prepared.timings,
            "generator_queue": toons.queued_s,
            "generate": toons.generate_s,
        }
        started = time.perf_counter()
        if options.paste_back:
            image = paste_answer(job.prepared, toons.pixels, job.answer_size)
            timings["paste_back"] = time.perf_counter() - started
            started = time.perf_counter()
        else:
            aligned = job.crops if options.return_aligned else None
            side = job.answer_size[0] // len(toons.pixels)
            image = face_sheet(toons.pixels, aligned, side)
        body = encode_image(image, options.format, options.quality)
        timings["encode"] = time.perf_counter() - started
        return ToonifiedPhoto(
            image=body,
            image_type=options.format.media_type,
            level=job.level,
            generated_size=toons.generated_size,
            num_faces=job.prepared.num_faces,
            faces=[FaceInfo(**face.to_dict()) for face in job.prepared.faces],
            timings=timings,
        )
