"""The yardstick: the service as the 2020 site ran it.

One Flask process answering one request at a time: a default ONNX Runtime session (its own
thread count, no caching, no batching), and per request decode, EXIF orient, detect, align,
infer, encode. It shares the preprocessing functions with the service so the comparison is
about serving, not about face detection.

    python -m benchmarks.baseline_server MODEL.onnx --port 5000 [--layout NCHW] [--size 512]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
from flask import Flask, Response, request
from PIL import Image

from preprocess import InputError, align_face, create_detector, read_photo
from toonify.generation.signature import GeneratorSignature


def create_app(model: Path, signature: GeneratorSignature) -> Flask:
    app = Flask("baseline")
    session = ort.InferenceSession(str(model))  # the defaults, as in 2020
    name = session.get_inputs()[0].name
    detector = create_detector("mtcnn")

    @app.get("/readyz")
    def ready() -> str:
        return "ok"

    @app.post("/toonify")
    def toonify() -> Response:
        try:
            photo = read_photo(request.get_data())
        except InputError as exc:
            return Response(str(exc), status=400)
        faces = detector.detect(photo)
        if not faces:
            return Response("no face", status=422)
        crop = np.asarray(align_face(photo, faces[0].landmarks, signature.size).image)[None]
        output = session.run(None, {name: signature.to_model_input(crop)})[0]
        buffer = io.BytesIO()
        Image.fromarray(signature.from_model_output(output)[0]).save(buffer, "JPEG", quality=90)
        return Response(buffer.getvalue(), mimetype="image/jpeg")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--layout", default="NCHW")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    app = create_app(args.model, GeneratorSignature(layout=args.layout, size=args.size))
    app.run(host="127.0.0.1", port=args.port, threaded=False)  # one image at a time


if __name__ == "__main__":
    main()
