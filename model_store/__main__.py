"""Manage the service's models in the BentoML model store.

python -m model_store build-defaults
python -m model_store import-generator PATH --name NAME [--layout NCHW|NHWC]
    [--value-range=-1,1] [--size 512] [--channel-order RGB|BGR] --licence TEXT
python -m model_store import-detector PATH --name NAME --family scrfd|yunet|mtcnn --licence TEXT
python -m model_store list
"""

from __future__ import annotations

import argparse
import sys

from toonify.generation.signature import GeneratorSignature
from toonify.settings import SETTINGS

from .build import (
    DETECTOR_FAMILIES,
    ModelImportError,
    build_defaults,
    build_twin,
    import_detector,
    import_generator,
    list_models,
)
from .load import choose_precision


def _value_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LOW,HIGH such as -1,1 or 0,255: {text!r}"
        ) from None
    return low, high


def _quality(meta: dict) -> str:
    """What the import measured, and the precision a CPU worker will run at the default bar."""
    figures = ", ".join(
        f"{precision} {meta[key]} dB"
        for precision in ("int8", "bf16", "fp16")
        if (key := f"{precision}_psnr_db") in meta and meta[key] is not None
    )
    chosen = choose_precision("auto", meta, SETTINGS.min_psnr_db)
    reduced = meta.get("reduced_psnr_db") or {}
    sizes = ", ".join(
        f"{size} px ({psnr} dB against {meta['size']} px)" for size, psnr in reduced.items()
    )
    return (
        f"lowest PSNR against fp32 on held-out real faces: {figures or 'not measured'}; "
        f"CPU precision at the {SETTINGS.min_psnr_db:g} dB bar: {chosen}\n"
        f"also runs at: {sizes or 'no smaller size (the service will have no reduced level)'}"
    )


def _describe(model) -> str:
    meta = model.info.metadata
    if meta.get("kind") == "generator":
        detail = f"{meta['layout']} {meta['channel_order']} {meta['value_range']} {meta['size']}px"
        if meta.get("reduced_sizes"):
            detail += f" (also {'/'.join(map(str, meta['reduced_sizes']))})"
        if meta.get("cost_twin"):
            detail = f"COST TWIN (noise) {detail}"
    else:
        detail = f"detector {meta.get('family')}"
        if meta.get("source"):
            detail += f" from {meta['source'].split(' ')[0]}"
    return f"{model.tag!s:<40} {detail:<36} {meta.get('licence', '')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_store", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build-defaults", help="register the offline detector and toon-filter")
    twin = commands.add_parser("build-twin", help="register cost-twin: pix2pixHD, random weights")
    twin.add_argument("--size", type=int, default=512)

    gen = commands.add_parser("import-generator", help="validate and store an ONNX generator")
    gen.add_argument("path")
    gen.add_argument("--name", required=True)
    gen.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW")
    gen.add_argument(
        "--value-range",
        type=_value_range,
        default=(-1.0, 1.0),
        help="input and output range, e.g. --value-range=-1,1 (default) or 0,255",
    )
    gen.add_argument("--size", type=int, default=512)
    gen.add_argument("--channel-order", choices=["RGB", "BGR"], default="RGB")
    gen.add_argument("--licence", required=True, help="licence note stored with the model")
    gen.add_argument("--description", default="")

    det = commands.add_parser("import-detector", help="store a face detector")
    det.add_argument("path", help="an ONNX file (scrfd, yunet) or MTCNN's folder")
    det.add_argument("--name", required=True)
    det.add_argument("--family", choices=DETECTOR_FAMILIES, required=True)
    det.add_argument("--licence", required=True)

    commands.add_parser("list", help="the generators and detectors in the store")
    args = parser.parse_args(argv)

    try:
        if args.command == "build-defaults":
            for model in build_defaults():
                print(f"registered {model.tag}")
        elif args.command == "build-twin":
            model = build_twin(args.size)
            print(
                f"registered {model.tag}: COST TWIN, "
                f"{model.info.metadata['parameters']:,} parameters, output is noise"
            )
        elif args.command == "import-generator":
            signature = GeneratorSignature(
                args.layout, args.value_range, args.size, args.channel_order
            )
            model = import_generator(
                args.path, args.name, signature, args.licence, args.description
            )
            print(f"imported {model.tag} (sha256 {model.info.metadata['sha256'][:12]}...)")
            print(_quality(model.info.metadata))
        elif args.command == "import-detector":
            model = import_detector(args.path, args.name, args.family, args.licence)
            print(f"imported {model.tag}")
        else:
            for model in list_models():
                print(_describe(model))
    except (ModelImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
