"""Debug alignment from the command line.

    python -m preprocess PHOTO... --out DIR [--detector mtcnn|scrfd:PATH|yunet:PATH] [--size 512]

Writes each aligned face as DIR/<photo stem>_<index>.png and prints one JSON line per face.
A bad file gets a one-line message on stderr; the others are still processed, and the exit
status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .align import align_face
from .decode import read_photo
from .detect import DetectorSettings
from .detectors import create_detector
from .errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess", description=__doc__.split("\n")[0]
    )
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    parser.add_argument("--out", required=True, type=Path, help="folder for the aligned PNGs")
    parser.add_argument("--detector", default="mtcnn", help="mtcnn | scrfd:PATH | yunet:PATH")
    parser.add_argument("--size", type=int, default=512, help="aligned crop size (default 512)")
    parser.add_argument("--detect-size", type=int, default=DetectorSettings.detect_size)
    args = parser.parse_args(argv)

    try:
        detector = create_detector(args.detector, DetectorSettings(detect_size=args.detect_size))
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)

    failed = 0
    for path in args.photos:
        try:
            photo = read_photo(path.read_bytes())
        except (OSError, InputError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        faces = detector.detect(photo)
        if not faces:
            print(f"{path}: no face found", file=sys.stderr)
        for index, face in enumerate(faces):
            aligned = align_face(photo, face.landmarks, size=args.size)
            aligned.image.save(args.out / f"{path.stem}_{index}.png")
            record = {"file": str(path), "index": index, **face.to_dict()}
            record["quad"] = [[round(v, 2) for v in point] for point in aligned.quad.tolist()]
            print(json.dumps(record), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
