"""Detection with real weights on real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from preprocess import DetectorSettings, create_detector, read_photo
from preprocess.detect import box_iou, fix_landmark_sides, nms

from .conftest import asset

BACKENDS = ["mtcnn", "scrfd", "yunet"]


iou = box_iou


@pytest.mark.parametrize("backend", BACKENDS)
def test_astronaut_has_one_face(detectors, astronaut, backend):
    faces = detectors(backend).detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, (175, 60, 270, 180)) > 0.5  # her face, top centre
    left_eye, right_eye = face.landmarks[0], face.landmarks[1]
    assert left_eye[0] < right_eye[0] and face.landmarks[3][1] > left_eye[1]


@pytest.mark.parametrize(("backend", "expected"), [("scrfd", 6), ("yunet", 6), ("mtcnn", 5)])
def test_t1_table_of_six(detectors, t1_photo, backend, expected):
    faces = detectors(backend).detect(t1_photo)
    if backend == "mtcnn":
        assert expected <= len(faces) <= 6
    else:
        assert len(faces) == expected
    areas = [f.width * f.height for f in faces]
    assert areas == sorted(areas, reverse=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_phone_photo_and_its_exif_6_copy(detectors, backend):
    detector = detectors(backend)
    upright = read_photo(asset("faces/pexels_two_women_on_phones.jpg").read_bytes())
    rotated = read_photo(asset("faces/pexels_two_women_exif_orientation6.jpg").read_bytes())
    big, big_rotated = detector.detect(upright)[0], detector.detect(rotated)[0]
    scale = rotated.width / upright.width
    assert big.width > 150  # the large face, not the blurred one in the background
    assert iou(np.multiply(big.box, scale), big_rotated.box) > 0.6


def test_scrfd_500m_too(astronaut):
    detector = create_detector(f"scrfd:{asset('scrfd_500m.onnx')}")
    assert len(detector.detect(astronaut)) == 1


def test_results_are_in_full_resolution_coordinates(detectors, astronaut):
    detector = detectors("mtcnn")
    small = detector.detect(astronaut)[0]
    large = detector.detect(astronaut.resize((2048, 2048), Image.Resampling.BICUBIC))[0]
    np.testing.assert_allclose(np.asarray(large.box) / 4, small.box, atol=4)
    np.testing.assert_allclose(large.landmarks / 4, small.landmarks, atol=4)


def test_minimum_face_size_and_threshold_are_settings(astronaut):
    assert create_detector("mtcnn", DetectorSettings(min_face_size=200)).detect(astronaut) == []
    assert create_detector("mtcnn", DetectorSettings(score_threshold=1.01)).detect(astronaut) == []


def test_blank_image_has_no_face(detectors):
    assert detectors("mtcnn").detect(Image.new("RGB", (640, 480), (128, 128, 128))) == []


def test_mirrored_landmarks_are_swapped_back():
    upright = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=np.float32)
    np.testing.assert_array_equal(fix_landmark_sides(upright), upright)
    swapped = upright[[1, 0, 2, 4, 3]]
    np.testing.assert_array_equal(fix_landmark_sides(swapped), upright)


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 8, 8]], float)
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]


def test_unknown_or_incomplete_specs_are_refused():
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("retina")
    with pytest.raises(ValueError, match="needs a model"):
        create_detector("yunet")
    with pytest.raises(FileNotFoundError):
        create_detector("scrfd:/nonexistent/scrfd.onnx")
