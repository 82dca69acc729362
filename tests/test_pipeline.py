"""The preprocessing stage in one call, the worker's two calls around the generator, and the
service classes called directly (no server)."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from preprocess import NoFaceFound
from preprocess.pipeline import prepare_photo, select_faces
from toonify.photos import PhotoPipeline
from toonify.schema import ToonifyOptions, Toons
from toonify.settings import Settings


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_prepare_photo_times_every_stage(detectors, t1_photo):
    prepared = prepare_photo(png_bytes(t1_photo), detectors("mtcnn"), all_faces=True, crop_size=256)
    assert prepared.num_faces >= 5 and len(prepared.aligned) == prepared.num_faces
    assert set(prepared.timings) == {"decode", "orient", "detect", "align"}
    assert all(seconds > 0 for seconds in prepared.timings.values())
    assert prepared.aligned[0].image.size == (256, 256)


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
    pipeline = PhotoPipeline(detectors("mtcnn"), Settings())
    job = pipeline.prepare(png_bytes(t1_photo), ToonifyOptions(paste_back=True, format="png"))
    assert job.prepared.size == t1_photo.size and job.answer_size == t1_photo.size
    black = np.zeros_like(job.crops)
    toons = Toons(pixels=black, queued_s=0.0, generate_s=0.0, batch_size=len(black))
    result = pipeline.finish(job, toons, ToonifyOptions(paste_back=True, format="png"))
    pasted = np.asarray(Image.open(io.BytesIO(result.image)))
    assert pasted.shape == np.asarray(t1_photo).shape
    for face in job.prepared.faces:
        nose_x, nose_y = face.landmarks[2].astype(int)
        assert pasted[nose_y, nose_x].max() < 10  # the black toon is in, at full resolution
    assert set(result.timings) == {
        "decode", "orient", "detect", "align", "generator_queue", "generate", "paste_back",
        "encode",
    }  # fmt: skip


def test_services_called_directly(default_models, astronaut):
    """The service classes as plain objects (the generator in-process): answers as typed
    values, user errors as error answers with their status."""
    from service import Preprocess

    preprocess = Preprocess()

    def toonify(data: bytes, **options):
        call = preprocess.toonify_photo(data, ToonifyOptions(**options), time.time() + 60)
        return asyncio.run(call)

    result = toonify(png_bytes(astronaut), format="png", return_aligned=True)
    assert result.num_faces == 1 and result.image_type == "image/png"
    assert Image.open(io.BytesIO(result.image)).size == (512, 1024)
    not_an_image = toonify(b"not an image")
    assert not_an_image.status_code == 400 and b"not_an_image" in not_an_image.body
    grey = toonify(png_bytes(Image.new("RGB", (200, 200), "grey")))
    assert grey.status_code == 422 and b'"num_faces":0' in grey.body
