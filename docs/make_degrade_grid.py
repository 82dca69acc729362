"""What the degrade ladder's reduced level looks like: each face toonified at the full level
(aligned at 512, generated at 512) and at the reduced level (aligned at 256 without
supersampling, generated at 256, scaled up to 512), per generator, at the precision the service
runs it at.

make import-animegan             # optional: adds AnimeGANv3 (weights from ../shared/models)
python docs/make_degrade_grid.py # writes docs/images/degrade-grid.jpg
"""

from __future__ import annotations

import sys

import bentoml
import numpy as np
from make_grid import GENERATORS, labelled, photos, same_faces, save_grid
from PIL import Image

from model_store import detector_spec, load_generator
from preprocess import Face, align_face, create_detector
from preprocess.pipeline import crop_features
from toonify.levels import Level, level_settings
from toonify.settings import Settings

SIDE = 384  # tiles large enough to see the detail the reduced level gives up
ROWS = 5


def toon_at(generator, photo: Image.Image, face: Face, level: Level) -> Image.Image:
    """The face as the service draws it at ``level``, at the answer's 512 px."""
    at = level_settings(Settings(), level)
    aligned = align_face(photo, face.landmarks, at.crop_size, at.supersample)
    features = crop_features(face, aligned)[None]
    toon = Image.fromarray(generator(np.asarray(aligned.image)[None], features)[0])
    return toon.resize((512, 512), Image.Resampling.LANCZOS) if toon.width != 512 else toon


def main() -> None:
    mesh = create_detector(detector_spec(bentoml.models.get("mediapipe-face:latest")))
    mtcnn = create_detector(detector_spec(bentoml.models.get("mtcnn:latest")))
    generators = []
    for label, tag in GENERATORS:
        try:
            generators.append((label, load_generator(bentoml.models.get(tag))))
        except bentoml.exceptions.NotFound:
            print(f"skipping {label}: {tag} is not in the model store", file=sys.stderr)
    rows = []
    for name, photo, count in photos():
        before_faces = mtcnn.detect(photo)[: min(count, 2)]
        after_faces = same_faces(mesh.detect(photo), before_faces)
        for before, face in zip(before_faces, after_faces, strict=True):
            tiles = [labelled(align_face(photo, face.landmarks, 512).image, name, SIDE)]
            for label, generator in generators:
                # Before: MTCNN's points and no mesh (the frontal template), as it was drawn.
                versions = [(before, f"{label} before"), (face, label)]
                for which, text in versions if generator.takes_features else versions[1:]:
                    for level in Level:
                        toon = toon_at(generator, photo, which, level)
                        tiles.append(labelled(toon, f"{text}, {level.value}", SIDE))
            rows.append(tiles)
    save_grid(rows[:ROWS], SIDE, "degrade-grid.jpg", quality=85)


if __name__ == "__main__":
    main()
