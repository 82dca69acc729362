"""``toon-filter``: a procedural cartoon stylizer compiled to ONNX. No learned weights.

It is the honest offline default: the service runs end to end with nothing downloaded, and the
result looks drawn, but it is an image filter, not a toon generator. Steps, all on [0, 1] RGB:

1. edge-preserving smoothing: two passes of a self-guided filter (He et al.), built from box
   filters, which flattens skin and cloth but keeps contours;
2. brightness quantised to a few bands, hue kept (the flat, cel-shaded look);
3. dark lines where the Sobel gradient of the smoothed luminance is strong.

Signature, the same as a pix2pixHD Toonify export: NCHW RGB float32 in [-1, 1], 512x512 (the
graph itself accepts any size).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
INPUT, OUTPUT = "image", "toon"
DESCRIPTION = (
    "Procedural cartoon filter (guided-filter smoothing, brightness bands, Sobel edge lines) "
    "compiled to ONNX; no learned weights. A stand-in so the service runs offline, not a "
    "trained toon generator."
)


class _Graph:
    """Tiny helper that names nodes and constants as it goes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value, name: str | None = None) -> str:
        name = name or self._name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def box(self, x: str, radius: int) -> str:
        """Mean over a (2r+1)^2 window per channel, reflecting at the border."""
        side = 2 * radius + 1
        weights = np.full((3, 1, side, side), 1.0 / side**2, dtype=np.float32)
        pads = self.const(np.array([0, 0, radius, radius, 0, 0, radius, radius], dtype=np.int64))
        padded = self.op("Pad", x, pads, mode="reflect")
        return self.op("Conv", padded, self.const(weights), group=3)

    def guided_smooth(self, x: str, radius: int, eps: float) -> str:
        mean = self.box(x, radius)
        mean_sq = self.box(self.op("Mul", x, x), radius)
        var = self.op("Sub", mean_sq, self.op("Mul", mean, mean))
        a = self.op("Div", var, self.op("Add", var, self.const(np.float32(eps))))
        b = self.op("Sub", mean, self.op("Mul", a, mean))
        return self.op("Add", self.op("Mul", self.box(a, radius), x), self.box(b, radius))


def build_toon_filter(
    radius: int = 4, eps: float = 0.01, levels: int = 5, edge_threshold: float = 0.12,
    edge_gain: float = 5.0, edge_darkness: float = 0.8,
) -> onnx.ModelProto:  # fmt: skip
    g = _Graph()
    x = g.op("Mul", g.op("Add", INPUT, g.const(np.float32(1.0))), g.const(np.float32(0.5)))
    smooth = g.guided_smooth(g.guided_smooth(x, radius, eps), radius, eps)

    # Quantise brightness, not each channel: bands of shading with the hue kept.
    luma_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
    luma = g.op("Conv", smooth, g.const(luma_weights))
    step = g.const(np.float32(levels))
    banded = g.op(
        "Div", g.op("Add", g.op("Round", g.op("Mul", luma, step)), g.const(np.float32(0.5))), step
    )
    gain = g.op("Div", banded, g.op("Add", luma, g.const(np.float32(0.02))))
    flat = g.op(
        "Mul", smooth, g.op("Clip", gain, g.const(np.float32(0.5)), g.const(np.float32(1.6)))
    )
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
    sobel = np.stack([sobel_x, sobel_x.T])[:, None]  # (2, 1, 3, 3)
    pads = g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64))
    gradients = g.op("Conv", g.op("Pad", luma, pads, mode="reflect"), g.const(sobel))
    magnitude = g.op(
        "Sqrt",
        g.op("ReduceSum", g.op("Mul", gradients, gradients), g.const(np.array([1], np.int64)),
             keepdims=1),
    )  # fmt: skip
    edges = g.op(
        "Clip",
        g.op("Mul", g.op("Sub", magnitude, g.const(np.float32(edge_threshold))),
             g.const(np.float32(edge_gain))),
        g.const(np.float32(0.0)),
        g.const(np.float32(1.0)),
    )  # fmt: skip
    shade = g.op(
        "Sub", g.const(np.float32(1.0)), g.op("Mul", edges, g.const(np.float32(edge_darkness)))
    )
    drawn = g.op("Mul", flat, shade)

    scaled = g.op("Sub", g.op("Mul", drawn, g.const(np.float32(2.0))), g.const(np.float32(1.0)))
    g.nodes.append(
        helper.make_node(
            "Clip", [scaled, g.const(np.float32(-1)), g.const(np.float32(1))], [OUTPUT]
        )
    )

    shape = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        g.nodes,
        "toon_filter",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, shape)],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="toonify-serving"
    )
    model.ir_version = 9  # readable by every onnxruntime release that supports opset 17
    model.doc_string = DESCRIPTION
    onnx.checker.check_model(model, full_check=True)
    return model
