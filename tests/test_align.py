"""FFHQ alignment against an independent reading of the reference, and paste-back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from preprocess import Orientation, align_face, ffhq_quad, paste_back

from .conftest import FFHQ_EYES_512


def reference_quad(landmarks) -> list[tuple[float, float]]:
    """NVlabs ffhq-dataset recreate_aligned_images, transcribed with scalars."""
    (elx, ely), (erx, ery), _, (mlx, mly), (mrx, mry) = [tuple(map(float, p)) for p in landmarks]
    eax, eay = (elx + erx) / 2, (ely + ery) / 2
    eex, eey = erx - elx, ery - ely
    emx, emy = (mlx + mrx) / 2 - eax, (mly + mry) / 2 - eay
    # x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1]
    xx, xy = eex + emy, eey - emx
    norm = math.hypot(xx, xy)
    scale = max(math.hypot(eex, eey) * 2.0, math.hypot(emx, emy) * 1.8)
    xx, xy = xx / norm * scale, xy / norm * scale
    yx, yy = -xy, xx  # y = flipud(x) * [-1, 1]
    cx, cy = eax + emx * 0.1, eay + emy * 0.1
    return [
        (cx - xx - yx, cy - xy - yy),
        (cx - xx + yx, cy - xy + yy),
        (cx + xx + yx, cy + xy + yy),
        (cx + xx - yx, cy + xy - yy),
    ]


def test_quad_matches_reference_formula():
    rng = np.random.default_rng(7)
    for _ in range(200):
        eyes = rng.uniform(100, 900, size=(2, 2))
        landmarks = np.vstack([eyes, rng.uniform(100, 900, size=(3, 2))])
        np.testing.assert_allclose(ffhq_quad(landmarks), reference_quad(landmarks), atol=0.01)


def test_backends_agree_and_match_ffhq_eyes(detectors, astronaut):
    faces = {name: detectors(name).detect(astronaut)[0] for name in ("mtcnn", "scrfd", "yunet")}
    crops = {name: align_face(astronaut, face.landmarks, size=512) for name, face in faces.items()}
    for crop in crops.values():
        assert crop.image.size == (512, 512) and crop.image.mode == "RGB"

    # Each backend's eyes land where FFHQ puts them, within 2% of the crop size of each other.
    own_eyes = np.array([crops[n].photo_to_crop(faces[n].landmarks[:2]) for n in faces])
    assert np.ptp(own_eyes, axis=0).max() < 0.02 * 512
    assert np.abs(own_eyes - FFHQ_EYES_512).max() < 0.02 * 512

    # The crops themselves agree: one shared pair of eye points lands within 3% in all three
    # (YuNet places this face's left eye 4.5 px, 2.7% of the crop, left of the other two).
    shared_eyes = np.mean([face.landmarks[:2] for face in faces.values()], axis=0)
    in_crops = np.array([crop.photo_to_crop(shared_eyes) for crop in crops.values()])
    assert np.ptp(in_crops, axis=0).max() < 0.03 * 512


@pytest.mark.parametrize(("size", "supersample"), [(256, 1), (512, 2), (1024, 4)])
def test_output_size_and_supersampling(detectors, astronaut, size, supersample):
    face = detectors("mtcnn").detect(astronaut)[0]
    aligned = align_face(astronaut, face.landmarks, size=size, supersample=supersample)
    assert aligned.image.size == (size, size)
    np.testing.assert_allclose(aligned.quad, ffhq_quad(face.landmarks))
    eyes = aligned.photo_to_crop(face.landmarks[:2]) / size
    assert np.abs(eyes - FFHQ_EYES_512 / 512).max() < 0.03


def test_large_face_is_shrunk_and_edge_face_is_padded(detectors, astronaut):
    big = astronaut.resize((3072, 3072), Image.Resampling.BICUBIC)  # shrink > 1 at 512
    face = detectors("mtcnn").detect(big)[0]
    aligned = align_face(big, face.landmarks)
    assert np.abs(aligned.photo_to_crop(face.landmarks[:2]) - FFHQ_EYES_512).max() < 0.03 * 512
    # The astronaut's quad leaves the top of the photo: the padding is blurred, not black.
    top_rows = np.asarray(aligned.image)[:20].astype(float)
    assert top_rows.mean() > 60


def test_paste_back_of_unchanged_crop_is_invisible(detectors, astronaut):
    face = detectors("mtcnn").detect(astronaut)[0]
    aligned = align_face(astronaut, face.landmarks)
    result = paste_back(astronaut, [aligned], [aligned.image])
    assert result.size == astronaut.size
    x1, y1, x2, y2 = (int(v) for v in face.box)
    before = np.asarray(astronaut, dtype=float)[y1:y2, x1:x2]
    after = np.asarray(result, dtype=float)[y1:y2, x1:x2]
    assert np.abs(before - after).mean() < 2.0


def test_paste_back_places_every_face_and_nothing_else(detectors, t1_photo):
    faces = detectors("mtcnn").detect(t1_photo)
    aligned = [align_face(t1_photo, face.landmarks, size=256) for face in faces]
    black = [Image.new("RGB", (256, 256)) for _ in aligned]
    result = np.asarray(paste_back(t1_photo, aligned, black), dtype=float)
    original = np.asarray(t1_photo, dtype=float)
    for face in faces:
        cx, cy = (int(v) for v in face.landmarks[2])  # the nose is deep inside the crop
        assert result[cy, cx].max() < 10 and original[cy, cx].max() > 40
    assert np.abs(result - original)[:30, :].mean() < 1  # the wall above the heads is untouched
    assert np.array_equal(np.asarray(t1_photo, dtype=float), original)  # a copy was pasted into
    # In place: the same pixels, pasted into the photo itself.
    photo = t1_photo.copy()
    assert paste_back(photo, aligned, black, in_place=True) is photo
    assert np.array_equal(np.asarray(photo, dtype=float), result)


def test_paste_back_needs_one_crop_per_face(detectors, astronaut):
    face = detectors("mtcnn").detect(astronaut)[0]
    with pytest.raises(ValueError):
        paste_back(astronaut, [align_face(astronaut, face.landmarks)], [])


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_a_stored_photo_is_aligned_as_if_it_had_been_turned_upright(
    detectors, astronaut, orientation
):
    """Detection and alignment read the stored pixels through the EXIF orientation: the same
    faces and crops as from the photo turned upright first, which the pipeline never does."""
    upright = astronaut.crop((0, 0, 512, 400))  # not square; her quad leaves the top: padding
    turned = Orientation(orientation)
    inverse = {6: 8, 8: 6}.get(orientation, orientation)  # each orientation undoes itself else
    stored = Orientation(inverse).upright(upright)
    assert turned.upright(stored).tobytes() == upright.tobytes()
    detector = detectors("mtcnn")
    face = detector.detect(upright)[0]
    through = detector.detect(stored, turned)[0]
    np.testing.assert_allclose(through.landmarks, face.landmarks, atol=2.5)
    expected = np.asarray(align_face(upright, face.landmarks).image, dtype=float)
    aligned = align_face(stored, face.landmarks, orientation=turned)
    np.testing.assert_allclose(aligned.quad, ffhq_quad(face.landmarks))
    difference = np.abs(np.asarray(aligned.image, dtype=float) - expected)
    assert difference.mean() < 0.5 and np.percentile(difference, 99) < 4
