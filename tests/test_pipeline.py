"""The preprocessing stage in one call, the worker's two calls around the generator, and the
service classes called directly (no server)."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from preprocess import NoFaceFound, NotAnImage
from preprocess.features import TEMPLATE, template_features
from preprocess.pipeline import prepare_photo, select_faces
from toonify.errors import OutputTooLarge
from toonify.levels import Level
from toonify.photos.worker import PhotoWork
from toonify.schema import FaceCrops, ToonifyOptions, Toons
from toonify.settings import Settings


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def toons_of(pixels: np.ndarray) -> Toons:
    """What the generator would answer for these crops, made at their size."""
    return Toons(
        pixels=pixels,
        queued_s=0.0,
        generate_s=0.0,
        batch_size=len(pixels),
        generated_size=pixels.shape[1],
    )


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_prepare_photo_times_every_stage(detectors, t1_photo):
    prepared = prepare_photo(png_bytes(t1_photo), detectors("mtcnn"), all_faces=True, crop_size=256)
    assert prepared.num_faces >= 5 and len(prepared.aligned) == prepared.num_faces
    assert set(prepared.timings) == {"decode", "orient", "detect", "align"}
    assert all(seconds > 0 for seconds in prepared.timings.values())
    assert prepared.aligned[0].image.size == (256, 256)
    # MTCNN reads no mesh: each crop's features are FFHQ's frontal template.
    assert prepared.features.shape == (prepared.num_faces, 5, 8)
    assert prepared.features.dtype == np.float32
    assert (prepared.features == TEMPLATE).all()


def test_mesh_features_are_in_the_crops_frame_whatever_its_size(mediapipe, astronaut):
    """A face with a mesh gets its own rows, in the 512 frame at every crop size: the eyes
    near where FFHQ puts them (alignment fixes them), the same rows at 256 and at 512."""
    data = png_bytes(astronaut)
    large, small = (prepare_photo(data, mediapipe, crop_size=size) for size in (512, 256))
    features = large.features[0]
    assert not (features == TEMPLATE).all()
    assert np.abs(features[:2, :2] - TEMPLATE[:2, :2]).max() < 6
    np.testing.assert_allclose(small.features, large.features, atol=1e-3)


def test_crops_travel_with_one_row_of_features_each():
    pixels = np.zeros((2, 16, 16, 3), np.uint8)
    FaceCrops(pixels=pixels, features=template_features(2), deadline=0.0)
    for features in (template_features(1), template_features(2).astype(np.float64)):
        with pytest.raises(ValidationError, match="feature rows"):
            FaceCrops(pixels=pixels, features=features, deadline=0.0)


def test_face_selection(detectors, t1_photo):
    faces = detectors("mtcnn").detect(t1_photo)
    assert select_faces(faces, None, False, 8) == faces[:1]
    assert select_faces(faces, 2, False, 8) == [faces[2]]
    assert select_faces(faces, None, True, 3) == faces[:3]
    with pytest.raises(NoFaceFound) as caught:
        select_faces(faces, 40, False, 8)
    assert caught.value.num_faces == len(faces)
    with pytest.raises(NoFaceFound):
        select_faces([], None, True, 8)


def test_the_photo_is_decoded_once_and_kept_for_paste_back(detectors, t1_photo):
    pipeline = PhotoWork(detectors("mtcnn"), Settings())
    job = pipeline.prepare(png_bytes(t1_photo), ToonifyOptions(paste_back=True, format="png"))
    assert job.prepared.size == t1_photo.size and job.answer_size == t1_photo.size
    black = np.zeros_like(job.crops)
    toons = toons_of(black)
    result = pipeline.finish(job, toons, ToonifyOptions(paste_back=True, format="png"))
    pasted = np.asarray(Image.open(io.BytesIO(result.image)))
    assert pasted.shape == np.asarray(t1_photo).shape
    for face in job.prepared.faces:
        nose_x, nose_y = face.landmarks[2].astype(int)
        assert pasted[nose_y, nose_x].max() < 10  # the black toon is in, at full resolution
    assert set(result.timings) == {
        "decode",
        "orient",
        "detect",
        "align",
        "generator_queue",
        "generate",
        "paste_back",
        "encode",
    }


@pytest.mark.parametrize(
    "options",
    [ToonifyOptions(all_faces=True, return_aligned=True), ToonifyOptions(paste_back=True)],
    ids=["face sheet", "paste_back"],
)
def test_the_reduced_level_generates_smaller_and_answers_at_full_size(detectors, t1_photo, options):
    pipeline = PhotoWork(detectors("mtcnn"), Settings())
    data = png_bytes(t1_photo)
    full = pipeline.prepare(data, options)
    reduced = pipeline.prepare(data, options, Level.reduced)
    assert full.crops.shape[1:3] == (512, 512) and reduced.crops.shape[1:3] == (256, 256)
    assert len(reduced.crops) == len(full.crops) >= 5  # the same faces
    for a, b in zip(full.prepared.aligned, reduced.prepared.aligned, strict=True):
        np.testing.assert_allclose(a.quad, b.quad)  # a PNG: the same pixels, the same quads
    assert reduced.answer_size == full.answer_size
    result = pipeline.finish(reduced, toons_of(reduced.crops), options)
    assert Image.open(io.BytesIO(result.image)).size == full.answer_size
    assert result.level is Level.reduced and result.generated_size == 256
    again = pipeline.finish(full, toons_of(full.crops), options)
    assert again.level is Level.full and again.generated_size == 512


def test_the_reduced_level_decodes_a_jpeg_at_a_smaller_draft(detectors, astronaut):
    """A 3200 px JPEG: the full level decodes it at 1600 (its draft), the reduced at 800, and
    both find the face at the same place to within a pixel of the photo's own size."""
    pipeline = PhotoWork(detectors("mtcnn"), Settings())
    data = jpeg_bytes(astronaut.resize((3200, 3200), Image.Resampling.BICUBIC))
    full = pipeline.prepare(data, ToonifyOptions())
    reduced = pipeline.prepare(data, ToonifyOptions(), Level.reduced)
    assert full.prepared.stored.size == (1600, 1600) and reduced.prepared.stored.size == (800, 800)
    eyes_full = full.prepared.faces[0].landmarks[:2] * 2  # both in 3200 px photo coordinates
    eyes_reduced = reduced.prepared.faces[0].landmarks[:2] * 4
    assert np.abs(eyes_full - eyes_reduced).max() < 3200 / 100
    # A pasted answer is the photo itself: decoded at its full size at every level.
    pasted = pipeline.prepare(data, ToonifyOptions(paste_back=True), Level.reduced)
    assert pasted.prepared.stored.size == (3200, 3200) and pasted.answer_size == (3200, 3200)
    # What each holds is known from the header before decoding: 4 bytes a pixel, and a second
    # copy of the photo for a pasted answer.
    assert pipeline.pixel_bytes(data, ToonifyOptions()) == 4 * 1600 * 1600
    assert pipeline.pixel_bytes(data, ToonifyOptions(), Level.reduced) == 4 * 800 * 800
    assert pipeline.pixel_bytes(data, ToonifyOptions(paste_back=True)) == 2 * 4 * 3200 * 3200
    with pytest.raises(NotAnImage):
        pipeline.pixel_bytes(b"junk!", ToonifyOptions())


def test_the_header_check_refuses_what_prepare_would_before_any_face_is_sought(
    detectors, astronaut
):
    """``check`` (what a job's submission runs) raises the same errors as ``prepare`` for what a
    header tells, and passes a photo ``prepare`` takes."""
    pipeline = PhotoWork(detectors("mtcnn"), Settings(max_output_pixels=512 * 512))
    photo = jpeg_bytes(astronaut)
    pipeline.check(photo, ToonifyOptions())
    pipeline.check(photo, ToonifyOptions(paste_back=True))  # 512 x 512: within the budget
    for junk in (b"", b"junk!", b"%PDF-1.4\n"):
        with pytest.raises(NotAnImage):
            pipeline.check(junk, ToonifyOptions())
    with pytest.raises(OutputTooLarge):  # 1024 x 1024 asked of a 512 x 512 budget
        pipeline.check(photo, ToonifyOptions(size=1024))
    with pytest.raises(OutputTooLarge):
        pipeline.prepare(photo, ToonifyOptions(size=1024))
    big = jpeg_bytes(astronaut.resize((1024, 1024)))
    pipeline.check(big, ToonifyOptions(paste_back=True))  # scaled down to fit, not refused


def test_a_pasted_answer_takes_the_photos_pixels_once(detectors, astronaut):
    """The answer is pasted into the photo's own pixels, which the prepared photo lets go of:
    a 12 MP answer holds one copy of the photo, and a second take is an error, not stale data."""
    pipeline = PhotoWork(detectors("mtcnn"), Settings())
    job = pipeline.prepare(jpeg_bytes(astronaut), ToonifyOptions(paste_back=True))
    before = np.asarray(job.prepared.stored).copy()
    result = pipeline.finish(job, toons_of(job.crops), ToonifyOptions(paste_back=True))
    assert job.prepared.stored is None
    answer = np.asarray(Image.open(io.BytesIO(result.image)))
    assert answer.shape == before.shape and (answer != before).any()
    with pytest.raises(RuntimeError, match="taken"):
        job.prepared.take_upright()


def test_services_called_directly(default_models, astronaut):
    """The service classes as plain objects (the generator in-process): answers as typed
    values, user errors as the exceptions themselves."""
    from service import Preprocess

    preprocess = Preprocess()

    def toonify(data: bytes, **options):
        deadline = time.time() + 60
        options = ToonifyOptions(**options)
        call = preprocess.toonify_photo(data, options, deadline, Level.full, "127.0.0.1")
        return asyncio.run(call)

    result = toonify(png_bytes(astronaut), format="png", return_aligned=True)
    assert result.num_faces == 1 and result.image_type == "image/png"
    assert Image.open(io.BytesIO(result.image)).size == (512, 1024)
    assert result.level is Level.full and result.generated_size == 512
    with pytest.raises(NotAnImage):
        toonify(b"not an image")
    with pytest.raises(NoFaceFound) as no_face:
        toonify(png_bytes(Image.new("RGB", (200, 200), "grey")))
    assert no_face.value.num_faces == 0
