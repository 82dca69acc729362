"""Images per second of a generator at batch sizes 1 to 64, on the best providers here.

    python -m benchmarks.batch_sizes MODEL.onnx [--layout NHWC] [--size 512]
        [--precision f32|fp16] [--batches 1,2,4,8,16,32,64] [--seconds 5]

On a GPU machine with onnxruntime-gpu this measures TensorRT / CUDA (fp16 through TensorRT's
fp16 engines, or the fp16 copy the model store keeps for CUDA), and prints the cost per 1000
images at $3.99 per GPU-hour; on a CPU it measures the CPU provider.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from toonify.generation.generator import OnnxGenerator
from toonify.generation.signature import GeneratorSignature

GPU_HOUR_USD = 3.99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--layout", default="NCHW")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--precision", default="f32", choices=["f32", "fp16"])
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per batch size")
    args = parser.parse_args()

    generator = OnnxGenerator(
        args.model,
        GeneratorSignature(layout=args.layout, size=args.size),
        backend="onnxruntime",
        precision=args.precision,
    )
    print(f"{args.model.name} on {generator.providers}, {args.precision}, {args.size}px")
    print("| batch | images/s | $ per 1000 at $3.99/h |\n|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        crops = np.full((batch, args.size, args.size, 3), 128, dtype=np.uint8)
        generator(crops)  # warm-up: kernels, engines, allocations for this shape
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            generator(crops)
            done += batch
        rate = done / (time.perf_counter() - started)
        print(f"| {batch} | {rate:.2f} | ${1000 * GPU_HOUR_USD / 3600 / rate:.4f} |", flush=True)


if __name__ == "__main__":
    main()
