"""The preprocessing stage in one call, and the service classes called directly (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from preprocess import NoFaceFound
from preprocess.pipeline import compose_photo, prepare_photo, select_faces


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


def test_compose_photo_pastes_into_the_full_photo(detectors, astronaut):
    data = png_bytes(astronaut)
    prepared = prepare_photo(data, detectors("mtcnn"))
    black = [type(a)(image=Image.new("RGB", a.image.size), quad=a.quad) for a in prepared.aligned]
    result = np.asarray(compose_photo(data, black))
    assert result.shape == (512, 512, 3)
    nose_x, nose_y = prepared.faces[0].landmarks[2].astype(int)
    assert result[nose_y, nose_x].max() < 10


def test_services_called_directly(default_models, astronaut):
    """The service classes as plain objects: errors come back as values, crops as uint8."""
    from service import Generator, Preprocess

    preprocess = Preprocess()
    prepared = preprocess.prepare(png_bytes(astronaut))
    assert prepared["num_faces"] == 1 and prepared["crops"].dtype == np.uint8
    assert prepared["crops"].shape == (1, 512, 512, 3) and len(prepared["faces"][0]["quad"]) == 4
    assert preprocess.prepare(b"not an image")["error"] == "not_an_image"
    grey = preprocess.prepare(png_bytes(Image.new("RGB", (200, 200), "grey")))
    assert grey == {"error": "no_face", "detail": grey["detail"], "num_faces": 0}

    results = Generator().generate([{"crop": crop, "sent": 0.0} for crop in prepared["crops"]])
    toons = np.stack([result["toon"] for result in results])
    assert toons.shape == prepared["crops"].shape and toons.dtype == np.uint8
    composed = preprocess.compose(
        png_bytes(astronaut), [prepared["faces"][0]["quad"]], toons, "png"
    )
    assert Image.open(io.BytesIO(composed)).size == astronaut.size
