"""The aligned crops from MTCNN's five points and from MediaPipe's Face Mesh, side by side.

make defaults                          # stores both detectors
python docs/make_align_compare.py      # writes docs/images/align-mediapipe-vs-mtcnn.jpg

One row per face (the photos of docs/make_grid.py): the photo around the face with each
detector's eye centres and mouth corners (MTCNN red, MediaPipe green), then the two 256 px FFHQ
crops, and the distance between the two eye centres as a fraction of the eye distance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bentoml
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docs.make_grid import photos
from model_store import detector_spec
from preprocess import align_face, create_detector
from preprocess.detect import box_iou

ROOT = Path(__file__).resolve().parents[1]
TILE = 256
RED, GREEN = (230, 40, 40), (40, 220, 60)


def context(photo: Image.Image, pairs) -> Image.Image:
    """The photo around both detections, both sets of points drawn on it."""
    box = np.array([face.box for face in pairs if face is not None])
    left, top = box[:, :2].min(axis=0)
    right, bottom = box[:, 2:].max(axis=0)
    margin = 0.3 * (right - left)
    window = (left - margin, top - margin, right + margin, bottom + margin)
    scale = TILE / max(window[2] - window[0], window[3] - window[1])
    view = photo.crop(tuple(round(v) for v in window)).resize(
        (round((window[2] - window[0]) * scale), round((window[3] - window[1]) * scale))
    )
    canvas = Image.new("RGB", (TILE, TILE), "white")
    canvas.paste(view, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for face, colour in zip(pairs, (RED, GREEN), strict=True):
        for x, y in face.landmarks[[0, 1, 3, 4]]:
            x, y = (x - window[0]) * scale, (y - window[1]) * scale
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), outline=colour, width=2)
    return canvas


def main() -> None:
    mtcnn = create_detector(detector_spec(bentoml.models.get("mtcnn:latest")))
    mediapipe = create_detector(detector_spec(bentoml.models.get("mediapipe-face:latest")))
    rows = []
    for label, photo, count in photos():
        found = mediapipe.detect(photo)
        for face in mtcnn.detect(photo)[:count]:
            other = max(found, key=lambda f: box_iou(f.box, face.box))
            eyes = np.linalg.norm(face.landmarks[1] - face.landmarks[0])
            offset = np.linalg.norm(other.landmarks[:2] - face.landmarks[:2], axis=1).max() / eyes
            crops = [align_face(photo, f.landmarks, size=TILE).image for f in (face, other)]
            rows.append((f"{label}: {offset:.0%}", [context(photo, (face, other)), *crops]))
    sheet = Image.new("RGB", (3 * TILE, len(rows) * (TILE + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (label, tiles) in enumerate(rows):
        top = row * (TILE + 18)
        draw.text((4, top + 2), label, fill="black")
        for column, tile in enumerate(tiles):
            sheet.paste(tile, (column * TILE, top + 18))
    out = ROOT / "docs" / "images" / "align-mediapipe-vs-mtcnn.jpg"
    sheet.save(out, quality=85)
    print(f"wrote {out}: {len(rows)} faces")


if __name__ == "__main__":
    main()
