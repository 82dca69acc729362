"""``cost-twin``: the seed's pix2pixHD GlobalGenerator with seeded random weights, as ONNX.

The 2020 Toonify weights were never released. This network has their exact architecture
(pix2pixHD defaults: ngf=64, 4 stride-2 downsamplings to 1024 channels, 9 residual blocks,
4 transposed convolutions back, reflect padding, InstanceNorm without affine, tanh), hence the
same compute (435 GFLOP per 512x512 image), memory and load time, and 182,443,267 parameters.
Its output is noise by design: it exists for load tests, capacity planning and cost figures,
and is labelled ``cost-twin`` wherever it appears.

Built with onnx.helper and numpy only (no PyTorch), NCHW RGB float32 in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .graph import GraphBuilder

INPUT, OUTPUT = "image", "toon"
EXPECTED_PARAMETERS = 182_443_267  # pix2pixHD GlobalGenerator at its defaults
DESCRIPTION = (
    "COST TWIN: pix2pixHD GlobalGenerator (ngf=64, 4 downsamplings, 9 residual blocks) with "
    "seeded random weights. Same compute, memory and load time as the 2020 Toonify model; its "
    "output is noise. For load tests, capacity planning and cost figures only."
)


@dataclass(frozen=True)
class TwinShape:
    ngf: int = 64
    n_downsampling: int = 4
    n_blocks: int = 9


class _Builder(GraphBuilder):
    """pix2pixHD's layers, with seeded weights counted as parameters."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.parameters = 0

    def _weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        name = self.name("w")
        # He initialisation keeps activations finite through 40 layers of random weights.
        values = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        self.initializers.append(numpy_helper.from_array(values, name))
        self.parameters += values.size
        return name

    def _bias(self, channels: int) -> str:
        name = self.name("b")
        self.initializers.append(numpy_helper.from_array(np.zeros(channels, np.float32), name))
        self.parameters += channels
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, pad: int = 0) -> str:
        weight = self._weight((c_out, c_in, k, k), c_in * k * k)
        return self.op(
            "Conv",
            x,
            weight,
            self._bias(c_out),
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
        )

    def up(self, x: str, c_in: int, c_out: int) -> str:
        weight = self._weight((c_in, c_out, 3, 3), c_in * 9)
        return self.op(
            "ConvTranspose",
            x,
            weight,
            self._bias(c_out),
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            output_padding=[1, 1],
        )

    def norm(self, x: str, channels: int) -> str:
        # Without affine, as pix2pixHD's: scale and shift are constants, not parameters.
        ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        return self.op(
            "InstanceNormalization", x, self.const(ones), self.const(zeros), epsilon=1e-5
        )

    def norm_relu(self, x: str, channels: int) -> str:
        return self.op("Relu", self.norm(x, channels))


def build_cost_twin(
    seed: int = 2020, shape: TwinShape = TwinShape()
) -> tuple[onnx.ModelProto, int]:
    """The twin as an ONNX model, and its parameter count (convolution weights and biases)."""
    b = _Builder(seed)
    ngf = shape.ngf
    x = b.norm_relu(b.conv(b.reflect_pad(INPUT, 3), 3, ngf, 7), ngf)
    channels = ngf
    for _ in range(shape.n_downsampling):
        x = b.norm_relu(b.conv(x, channels, channels * 2, 3, stride=2, pad=1), channels * 2)
        channels *= 2
    for _ in range(shape.n_blocks):
        y = b.norm_relu(b.conv(b.reflect_pad(x, 1), channels, channels, 3), channels)
        y = b.norm(b.conv(b.reflect_pad(y, 1), channels, channels, 3), channels)
        x = b.op("Add", x, y)
    for _ in range(shape.n_downsampling):
        x = b.norm_relu(b.up(x, channels, channels // 2), channels // 2)
        channels //= 2
    x = b.conv(b.reflect_pad(x, 3), channels, 3, 7)
    b.op("Tanh", x, output=OUTPUT)
    model = b.model("pix2pixhd_global_generator_cost_twin", INPUT, OUTPUT, DESCRIPTION)
    model.producer_name = "toonify-serving cost-twin"
    return model, b.parameters
