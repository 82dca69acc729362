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

from .graph import GraphBuilder

INPUT, OUTPUT = "image", "toon"
DESCRIPTION = (
    "Procedural cartoon filter (guided-filter smoothing, brightness bands, Sobel edge lines) "
    "compiled to ONNX; no learned weights. A stand-in so the service runs offline, not a "
    "trained toon generator."
)


class _Graph(GraphBuilder):
    """The filter's two building blocks on top of the generic builder."""

    def box(self, x: str, radius: int) -> str:
        """Mean over a (2r+1)^2 window per channel, reflecting at the border."""
        side = 2 * radius + 1
        weights = np.full((3, 1, side, side), 1.0 / side**2, dtype=np.float32)
        return self.op("Conv", self.reflect_pad(x, radius), self.const(weights), group=3)

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
    gradients = g.op("Conv", g.reflect_pad(luma, 1), g.const(sobel))
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
    g.op("Clip", scaled, g.const(np.float32(-1)), g.const(np.float32(1)), output=OUTPUT)
    model = g.model("toon_filter", INPUT, OUTPUT, DESCRIPTION)
    onnx.checker.check_model(model, full_check=True)
    return model
