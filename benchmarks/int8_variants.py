"""Ways to run a generator at int8, each against the 35 dB bar on the held-out faces, and its speed.

    python -m benchmarks.int8_variants [MODEL.onnx] [--layout NHWC] [--value-range=-1,1]

The model store quantizes with NNCF's defaults (model_store/build.py: ``quantize_int8``) and
judges the result on real faces held out from calibration; this tries what else NNCF offers for
a model that fails the bar (AnimeGANv3 by default, from ../shared/models): more calibration
faces (each also mirrored), min-max activation ranges, the mixed preset, the first and last
convolutions kept in floating point, accuracy-aware quantization (NNCF reverts the layers that
cost the most until the calibration faces keep 45 dB, or all are reverted), and int8 weights
with bf16 or f32 activations. Each is compared with bf16 (what the service runs now) in one run:
lowest PSNR against ONNX Runtime fp32 over the held-out faces, and ms per 512 crop (median).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.generator_streams import lone_latency
from model_store.build import calibration_faces, held_out_faces, lowest_psnr, one_at_a_time
from tools.machine import describe_cpu
from toonify.generation.generator import OnnxGenerator
from toonify.generation.signature import GeneratorSignature

SHARED_MODELS = Path(os.environ.get("TOONIFY_TEST_ASSETS", "../shared/models"))


def main() -> None:
    import nncf
    import openvino
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default=SHARED_MODELS / "animeganv3_tiny_cute.onnx")
    parser.add_argument("--layout", default="NHWC")
    parser.add_argument("--value-range", default="-1,1")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    low, high = (float(v) for v in args.value_range.split(","))
    signature = GeneratorSignature(args.layout, (low, high), args.size)
    source = Path(args.model)
    faces = held_out_faces(args.size)
    reference = one_at_a_time(OnnxGenerator(source, signature), faces)
    calibration = calibration_faces(args.size)
    mirrored = np.concatenate([calibration, calibration[:, :, ::-1]])
    model = openvino.Core().read_model(str(source))
    convolutions = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Convolution"
    ]

    def dataset(crops: np.ndarray) -> nncf.Dataset:
        return nncf.Dataset([signature.to_model_input(crop[None]) for crop in crops])

    def keeping_45_db(compiled, items) -> float:
        outputs = [signature.from_model_output(compiled(item)[0]) for item in items]
        return lowest_psnr(mirrored_reference, np.concatenate(outputs))

    mirrored_reference = one_at_a_time(OnnxGenerator(source, signature), mirrored)
    minmax = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
    )
    variants = {
        "int8, NNCF defaults (the model store's)": lambda: nncf.quantize(
            model, dataset(calibration), subset_size=len(calibration)
        ),
        "int8, mirrored calibration faces too": lambda: nncf.quantize(
            model, dataset(mirrored), subset_size=len(mirrored)
        ),
        "int8, min-max activation ranges": lambda: nncf.quantize(
            model, dataset(mirrored), subset_size=len(mirrored), advanced_parameters=minmax
        ),
        "int8, mixed preset, min-max ranges": lambda: nncf.quantize(
            model,
            dataset(mirrored),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(mirrored),
            advanced_parameters=minmax,
        ),
        "int8, first and last 3 convolutions in float": lambda: nncf.quantize(
            model,
            dataset(calibration),
            subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=convolutions[:3] + convolutions[-3:]),
        ),
        "int8, accuracy-aware (reverts layers for 45 dB)": lambda: (
            nncf.quantize_with_accuracy_control(
                model,
                dataset(mirrored),
                dataset(mirrored),
                validation_fn=keeping_45_db,
                max_drop=35.0,  # from OpenVINO fp32's ~80 dB against ONNX Runtime fp32
                drop_type=nncf.DropType.ABSOLUTE,
                subset_size=len(mirrored),
            )
        ),
        "int8 weights only": lambda: nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT8_ASYM
        ),
    }
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        bf16_ir = Path(folder) / "bf16" / "model.xml"
        openvino.save_model(model, str(bf16_ir), compress_to_fp16=True)
        bf16 = OnnxGenerator(bf16_ir, signature, backend="openvino", precision="bf16")
        bf16_ms = lone_latency(bf16, faces[:1], runs=15) * 1000
        rows.append(
            ("bf16 (served now)", lowest_psnr(reference, one_at_a_time(bf16, faces)), bf16_ms)
        )
        for index, (name, make) in enumerate(variants.items()):
            path = Path(folder) / str(index) / "model.xml"
            openvino.save_model(make(), str(path), compress_to_fp16=False)
            weights_only = name == "int8 weights only"
            for precision in ("bf16", "f32") if weights_only else ("int8",):
                generator = OnnxGenerator(path, signature, backend="openvino", precision=precision)
                psnr = lowest_psnr(reference, one_at_a_time(generator, faces))
                label = f"{name}, activations {precision}" if weights_only else name
                rows.append((label, psnr, lone_latency(generator, faces[:1], runs=15) * 1000))
    print(f"\n{describe_cpu()}; {source.name}, {len(faces)} held-out faces, bar 35 dB\n")
    print("| variant | lowest PSNR | passes | ms per crop | against bf16 |\n|---|---|---|---|---|")
    for name, psnr, ms in rows:
        passes = "yes" if psnr >= 35 else "no"
        print(f"| {name} | {psnr:.2f} dB | {passes} | {ms:.1f} | {bf16_ms / ms:.2f}x |")


if __name__ == "__main__":
    main()
