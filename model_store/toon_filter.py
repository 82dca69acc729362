"""``toon-filter``: a procedural toon stylizer compiled to ONNX. No learned weights.

It is the honest offline default: the service runs end to end with nothing downloaded, and the
face comes back reshaped and drawn, but by fixed rules, not a trained toon generator. Its second
input, ``features`` (preprocess/features.py), says where each crop's eyes, nose, mouth and jaw
are, from the face's Face Mesh (or FFHQ's frontal template). Steps, all on [0, 1] RGB:

1. **shape**: a smooth warp field (bilinear sampling) built from the features: each eye enlarged
   along its own contour, as far as it is open and seen; the nose and mouth shrunk; the jaw
   pulled in a little. Each region scales everything inside its inner ellipse by its factor and
   fades to nothing at ``FALLOFF`` times that ellipse, so the factors hold exactly where the
   feature is and nothing tears;
2. **smooth skin and hair**: a wide edge-preserving (guided) filter, then a narrow one;
3. **cel shading**: lightness in soft-edged bands (no blotches where texture sits on a band
   edge), hue kept, colour a little stronger, the lips stronger still;
4. **outlines**: thin dark lines from a difference of Gaussians of the smoothed lightness, a
   closed eye's lid drawn as one curved line, a catch-light in each open eye.

Signature, the same as a pix2pixHD Toonify export: NCHW RGB float32 in [-1, 1], 512x512 (the
graph accepts any size; the features are in the 512 frame whatever the size), and
``features`` (N, 5, 8).
"""

from __future__ import annotations

import numpy as np
import onnx

from preprocess.features import COLUMNS, FRAME, ROWS, TEMPLATE

from .graph import GraphBuilder

INPUT, FEATURES, OUTPUT = "image", "features", "toon"
DESCRIPTION = (
    "Procedural toon filter: a warp of the FFHQ-aligned frame driven by each face's landmarks "
    "(eyes enlarged along their contour when open, smaller nose and mouth, softer jaw), "
    "guided-filter smoothing, soft cel-shading bands, difference-of-Gaussians outlines, closed "
    "lids drawn as lines, compiled to ONNX; no learned weights. A stand-in so the service runs "
    "offline, not a trained toon generator."
)
# Each region's change fades to nothing at this multiple of its inner ellipse (nose and mouth
# further: they are small and a short fade would pinch the skin around them).
FALLOFF = {"left eye": 1.8, "right eye": 1.8, "nose": 2.0, "mouth": 2.0}
JAW_FADE = 40.0  # frame pixels over which the jaw's band of rows fades in and out
FIELD = 128  # the warp's displacement is computed at this size and enlarged: it is smooth
PAINT = 256  # the painted lines and lights are computed at this size
LID_WIDTH, LID_SAG, LINE_PX = 1.25, 0.45, 1.2  # a closed lid's line: of the eye's half-axes; px


def warp_field(features: np.ndarray = TEMPLATE, size: int = int(FRAME)) -> np.ndarray:
    """For each output pixel of a ``size`` frame, the input pixel it shows: (size, size, 2) x, y,
    for one crop's (5, 8) features. The graph computes the same displacement at ``FIELD``."""
    scale = size / FRAME
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / scale  # in 512-frame pixels
    dx_total, dy_total = _displacement(x, y, np.asarray(features, np.float64), np)
    return np.stack([x + dx_total, y + dy_total], axis=-1) * scale


def _displacement(x, y, features, ops):
    """Where each frame pixel samples from, minus where it is, for every region: shared by the
    numpy field and the graph (``ops`` is numpy or the graph's elementwise operations)."""
    total_x = total_y = 0.0
    for index, name in enumerate(ROWS):
        cx, cy, ax, ay, angle, factor = (features[index, j] for j in range(6))
        dx, dy = ops.subtract(x, cx), ops.subtract(y, cy)
        cos, sin = ops.cos(angle), ops.sin(angle)
        along = ops.add(ops.multiply(dx, cos), ops.multiply(dy, sin))
        across = ops.subtract(ops.multiply(dy, cos), ops.multiply(dx, sin))
        if name == "jaw":  # the band of rows below the mouth, pulled towards the centre line
            rows = ops.multiply(
                _smooth(ops, ops.divide(ops.add(across, ay), JAW_FADE)),
                _smooth(ops, ops.divide(ops.subtract(ay, across), JAW_FADE)),
            )
            side = ops.clip(ops.divide(ops.abs(along), ax), 0.0, 1.0)
            columns = ops.sin(ops.multiply(side, np.pi))
            shift = ops.multiply(ops.multiply(along, ops.subtract(1.0, factor)), rows)
            shift = ops.multiply(shift, columns)
            total_x = ops.add(total_x, ops.multiply(shift, cos))
            total_y = ops.add(total_y, ops.multiply(shift, sin))
            continue
        radius = ops.sqrt(
            ops.add(ops.square(ops.divide(along, ax)), ops.square(ops.divide(across, ay)))
        )
        blend = _smooth(ops, ops.divide(ops.subtract(radius, 1.0), FALLOFF[name] - 1.0))
        # Inside: sample 1/factor as far from the centre (magnify for factor > 1), fading out.
        change = ops.multiply(ops.subtract(ops.divide(1.0, factor), 1.0), ops.subtract(1.0, blend))
        total_x = ops.add(total_x, ops.multiply(dx, change))
        total_y = ops.add(total_y, ops.multiply(dy, change))
    return total_x, total_y


def _smooth(ops, t):
    t = ops.clip(t, 0.0, 1.0)
    return ops.multiply(ops.multiply(t, t), ops.subtract(3.0, ops.multiply(t, 2.0)))


def _paint(x, y, features, ops):
    """Three maps, 0..1: a closed lid's line, the lips, an open eye's catch-light. Drawn on the
    warped picture, so each region is its ellipse times its scale."""
    lid = light = 0.0
    for index in (0, 1):  # the eyes
        cx, cy, ax, ay, angle, factor, closed, opened = (features[index, j] for j in range(COLUMNS))
        # A closed eye is one curved line, corner to corner, sagging a little: the lower half
        # of a flat ellipse. Its distance from a pixel: |q - 1| / |grad q|, q the ellipse's
        # equation, so the line is as thick at its ends as in its middle.
        half_width, sag = ops.multiply(ax, LID_WIDTH), ops.multiply(ay, LID_SAG)
        dx, dy = ops.subtract(x, cx), ops.subtract(y, ops.subtract(cy, ops.multiply(ay, 0.1)))
        qx, qy = ops.divide(dx, half_width), ops.divide(dy, sag)
        q = ops.add(ops.square(qx), ops.square(qy))
        gradient = ops.sqrt(
            ops.add(
                ops.square(ops.divide(qx, half_width)),
                ops.add(ops.square(ops.divide(qy, sag)), 1e-6),
            )
        )
        distance = ops.divide(ops.abs(ops.subtract(q, 1.0)), ops.multiply(gradient, 2.0))
        line = ops.subtract(1.0, _smooth(ops, ops.divide(ops.subtract(distance, LINE_PX), 1.5)))
        lower = _smooth(
            ops, ops.divide(ops.add(dy, ops.multiply(sag, 0.1)), ops.multiply(sag, 0.4))
        )
        lid = ops.add(lid, ops.multiply(ops.multiply(line, lower), closed))
        # An open eye gets a catch-light above and towards the photo's left of its centre.
        lx = ops.subtract(x, ops.subtract(cx, ops.multiply(ax, 0.22)))
        ly = ops.subtract(y, ops.subtract(cy, ops.multiply(ay, 0.25)))
        radius = ops.multiply(ops.multiply(ax, 0.1), factor)
        spot = ops.sqrt(ops.add(ops.square(lx), ops.square(ly)))
        dot = ops.subtract(1.0, _smooth(ops, ops.divide(ops.subtract(spot, radius), 1.5)))
        light = ops.add(light, ops.multiply(dot, ops.clip(opened, 0.0, 1.0)))
    cx, cy, ax, ay, angle, factor, _, strength = (features[3, j] for j in range(COLUMNS))
    dx, dy = ops.subtract(x, cx), ops.subtract(y, cy)
    cos, sin = ops.cos(angle), ops.sin(angle)
    along = ops.divide(
        ops.add(ops.multiply(dx, cos), ops.multiply(dy, sin)), ops.multiply(ax, factor)
    )
    across = ops.divide(
        ops.subtract(ops.multiply(dy, cos), ops.multiply(dx, sin)), ops.multiply(ay, factor)
    )
    radius = ops.sqrt(ops.add(ops.square(along), ops.square(across)))
    lips = ops.multiply(
        ops.subtract(1.0, _smooth(ops, ops.divide(ops.subtract(radius, 0.8), 0.4))), strength
    )
    return ops.clip(lid, 0.0, 1.0), lips, ops.clip(light, 0.0, 1.0)


def fold_margin(field: np.ndarray) -> float:
    """The smallest Jacobian determinant of the field: > 0 means it never folds or tears."""
    dx_dx = np.gradient(field[..., 0], axis=1)
    dx_dy = np.gradient(field[..., 0], axis=0)
    dy_dx = np.gradient(field[..., 1], axis=1)
    dy_dy = np.gradient(field[..., 1], axis=0)
    return float(np.min(dx_dx * dy_dy - dx_dy * dy_dx))


class _Graph(GraphBuilder):
    """The filter's building blocks on top of the generic builder."""

    def separable(self, x: str, taps: np.ndarray, channels: int) -> str:
        """A symmetric 1-D filter along rows then columns, per channel, reflecting at the edge:
        ``taps`` one row for every channel, or (channels, K) one for each.

        One pad for both passes, then two unpadded convolutions.
        """
        row = np.broadcast_to(taps.astype(np.float32), (channels, taps.shape[-1]))
        row = np.ascontiguousarray(row).reshape(channels, 1, 1, -1)
        x = self.op(
            "Conv", self.reflect_pad(x, taps.shape[-1] // 2), self.const(row), group=channels
        )
        column = row.transpose(0, 1, 3, 2)
        return self.op("Conv", x, self.const(column), group=channels)

    def box(self, x: str, radius: int) -> str:
        """The mean over a square window ``2 radius + 1`` wide, reflecting at the edge: one
        average pool (ONNX Runtime pools three channels 1.6x faster than it runs the same
        window as two depthwise convolutions)."""
        side = 2 * radius + 1
        return self.op("AveragePool", self.reflect_pad(x, radius), kernel_shape=[side, side])

    def gaussian(self, x: str, sigma: float, channels: int = 1) -> str:
        return self.separable(x, gaussian_taps(sigma), channels)

    def difference_of_gaussians(self, x: str, sigma: float, wider: float) -> str:
        """One-channel ``x`` blurred by ``sigma`` minus blurred by ``wider``, both filters in one
        two-channel convolution (ONNX Runtime's blocked layout pads a one-channel convolution's
        output to 16 channels; a grouped one it leaves as it is)."""
        radius = int(np.ceil(3 * wider))
        taps = np.stack([gaussian_taps(sigma, radius), gaussian_taps(wider, radius)])
        both = self.separable(self.op("Concat", x, x, axis=1), taps, 2)
        return self.op("Sub", self.channel(both, 0), self.channel(both, 1))

    def guided_smooth(self, x: str, radius: int, eps: float, subsample: int = 1) -> str:
        """He et al.'s guided filter with the image as its own guide: flattens texture, keeps
        contours stronger than ``eps`` (a variance in [0, 1] units). With ``subsample`` > 1 the
        coefficients are computed on a smaller copy and enlarged (He's fast guided filter):
        a wide window for a fraction of the work. (OpenVINO's bf16 plugin also hung on
        depthwise kernels of 17 taps, which a full-size radius of 8 needed.)"""
        guide = x
        if subsample > 1:
            s = subsample
            guide = self.op("AveragePool", x, kernel_shape=[s, s], strides=[s, s])
            radius = max(1, radius // s)
        mean = self.box(guide, radius)
        mean_sq = self.box(self.op("Mul", guide, guide), radius)
        var = self.op("Sub", mean_sq, self.op("Mul", mean, mean))
        a = self.op("Div", var, self.op("Add", var, self.scalar(eps)))
        b = self.op("Sub", mean, self.op("Mul", a, mean))
        mean_a, mean_b = self.box(a, radius), self.box(b, radius)
        if subsample > 1:
            mean_a, mean_b = self.resize_like(mean_a, x), self.resize_like(mean_b, x)
        return self.op("Add", self.op("Mul", mean_a, x), mean_b)

    def luma(self, x: str) -> str:
        """(N, 1, H, W) lightness of RGB (N, 3, H, W): a product and a sum over the channels, not
        a 1x1 convolution, whose one output channel ONNX Runtime's blocked layout pads to 16."""
        weighted = self.op("Mul", x, self.const(LUMA))
        return self.op("ReduceSum", weighted, self.ints(1), keepdims=1)

    def resize_like(self, x: str, like: str) -> str:
        """``x`` resized (bilinear) to the height and width of ``like``; its own batch and
        channels kept."""
        batch_channels = self.op("Slice", self.op("Shape", x), self.ints(0), self.ints(2))
        height_width = self.op("Slice", self.op("Shape", like), self.ints(2), self.ints(4))
        sizes = self.op("Concat", batch_channels, height_width, axis=0)
        return self.op("Resize", x, "", "", sizes, mode="linear")

    def frame_grid(self, size: int) -> tuple[str, str]:
        """Constants (1, 1, size, size): the 512-frame x and y of each pixel's centre."""
        centres = (np.arange(size) + 0.5) * FRAME / size - 0.5
        x = np.broadcast_to(centres[None, :], (size, size))[None, None].astype(np.float32)
        return self.const(x), self.const(np.ascontiguousarray(x.transpose(0, 1, 3, 2)))

    def warp(self, x: str, table: _FeatureTable) -> str:
        """Sample ``x`` where the features' regions move it: the displacement computed at
        ``FIELD`` and enlarged to x's size (N, 2, H, W), plus the identity."""
        dx, dy = _displacement(*self.frame_grid(FIELD), table, _GraphOps(self))
        displacement = self.op("Concat", dx, dy, axis=1)  # frame pixels
        displacement = self.op("Mul", displacement, self.scalar(2.0 / FRAME))  # grid units
        centres = (np.arange(int(FRAME)) + 0.5) / FRAME * 2.0 - 1.0  # align_corners=0
        identity = np.stack(np.meshgrid(centres, centres))[None].astype(np.float32)  # 1,2,H,W
        grid = self.op(
            "Add",
            self.resize_like(displacement, x),
            self.resize_like(self.const(identity), x),
        )
        return self.grid_sample(x, grid)

    def paint(self, x: str, table: _FeatureTable) -> str:
        """(N, 3, H, W): where to draw a closed lid's line, the lips' colour and an open eye's
        catch-light, each 0..1, computed at ``PAINT`` and enlarged to x's size."""
        maps = _paint(*self.frame_grid(PAINT), table, _GraphOps(self))
        return self.resize_like(self.op("Concat", *maps, axis=1), x)


class _FeatureTable:
    """``table[row, column]``: one feature value per picture, as the graph's (N, 1, 1, 1)."""

    def __init__(self, graph: _Graph, features: str) -> None:
        self.graph, self.features, self.cache = graph, features, {}

    def __getitem__(self, key: tuple[int, int]) -> str:
        if key not in self.cache:
            g, (row, column) = self.graph, key
            picked = g.op(
                "Gather",
                g.op("Gather", self.features, g.const(np.int64(row)), axis=1),
                g.ints(column),
                axis=1,
            )  # N, 1
            self.cache[key] = g.op("Unsqueeze", picked, g.ints(2, 3))
        return self.cache[key]


class _GraphOps:
    """numpy's names for the graph's elementwise operations: ``_displacement`` and ``_paint``
    run on both. Numbers become constants."""

    def __init__(self, graph: _Graph) -> None:
        self.g = graph

    def _tensor(self, value) -> str:
        return value if isinstance(value, str) else self.g.scalar(float(value))

    def _binary(self, op_type: str, a, b) -> str:
        return self.g.op(op_type, self._tensor(a), self._tensor(b))

    def add(self, a, b) -> str:
        return self._binary("Add", a, b)

    def subtract(self, a, b) -> str:
        return self._binary("Sub", a, b)

    def multiply(self, a, b) -> str:
        return self._binary("Mul", a, b)

    def divide(self, a, b) -> str:
        return self._binary("Div", a, b)

    def square(self, a) -> str:
        return self.multiply(a, a)

    def clip(self, a, low: float, high: float) -> str:
        return self.g.op("Clip", self._tensor(a), self.g.scalar(low), self.g.scalar(high))

    def cos(self, a) -> str:
        return self.g.op("Cos", self._tensor(a))

    def sin(self, a) -> str:
        return self.g.op("Sin", self._tensor(a))

    def sqrt(self, a) -> str:
        return self.g.op("Sqrt", self._tensor(a))

    def abs(self, a) -> str:
        return self.g.op("Abs", self._tensor(a))


def gaussian_taps(sigma: float, radius: int | None = None) -> np.ndarray:
    """Normalised Gaussian taps over 3 sigma, or over ``radius`` (zeros past 3 sigma)."""
    reach = int(np.ceil(3 * sigma))
    offsets = np.arange(-reach, reach + 1)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    pad = (radius or reach) - reach
    return np.pad(taps, pad)


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)


def build_toon_filter(
    levels: int = 3,
    band_softness: float = 0.3,
    band_mix: float = 0.7,
    band_blur: float = 6.0,
    saturation: float = 1.25,
    line_sigma: float = 1.0,
    line_threshold: float = 0.002,
    line_gain: float = 80.0,
    line_darkness: float = 0.85,
    lip_saturation: float = 0.3,
) -> onnx.ModelProto:
    """The graph. ``levels`` shading bands whose edges blend over ``band_softness`` of a band,
    mixed ``band_mix`` into the smooth shading; outlines where the difference of Gaussians
    (sigma ``line_sigma`` and 1.6x) falls below ``-line_threshold``."""
    margin = fold_margin(warp_field(TEMPLATE))
    if margin <= 0.2:  # the warp would fold the picture over itself somewhere
        raise ValueError(f"the warp field folds (smallest Jacobian {margin:.3f})")
    g = _Graph()
    x = g.op("Mul", g.op("Add", INPUT, g.scalar(1.0)), g.scalar(0.5))
    table = _FeatureTable(g, FEATURES)  # one Gather per value, for the warp and the paint
    shaped = g.warp(x, table)
    painted = g.paint(x, table)
    lid, lips, light = (g.channel(painted, c) for c in range(3))
    smooth = g.guided_smooth(g.guided_smooth(shaped, 8, 0.02, subsample=2), 3, 0.005)

    # Cel shading: flat bands of lightness, hue kept, then colour a little stronger. The bands
    # follow a blurred lightness, so texture (hair, stubble) never cuts a band into blotches.
    luma = g.luma(smooth)
    # The blur is wide, so it is done at a quarter of the size and enlarged: the same bands for
    # a sixteenth of the work.
    quarter = g.op("AveragePool", luma, kernel_shape=[4, 4], strides=[4, 4])
    broad = g.resize_like(g.gaussian(quarter, band_blur / 4), luma)
    steps = g.op("Mul", broad, g.scalar(levels))
    floor = g.op("Floor", steps)
    within = g.op("Sub", steps, floor)  # 0..1 inside a band
    edge = g.op("Div", g.op("Sub", within, g.scalar(1.0 - band_softness)), g.scalar(band_softness))
    ramp = g.op("Clip", edge, g.scalar(0.0), g.scalar(1.0))
    banded = g.op("Div", g.op("Add", g.op("Add", floor, g.scalar(0.5)), ramp), g.scalar(levels))
    banded = g.op(
        "Add", g.op("Mul", banded, g.scalar(band_mix)), g.op("Mul", luma, g.scalar(1.0 - band_mix))
    )
    gain = g.op(
        "Clip", g.op("Div", banded, g.op("Add", luma, g.scalar(0.02))), g.scalar(0.5), g.scalar(1.6)
    )
    # The lips' colour stronger than the rest (teeth and grey stay grey: nothing to strengthen).
    stronger = g.op("Add", g.scalar(saturation), g.op("Mul", lips, g.scalar(lip_saturation)))

    # Outlines: the dark side of a difference of Gaussians of the lightly smoothed lightness.
    line_luma = g.guided_smooth(g.luma(shaped), 3, 0.005)
    difference = g.difference_of_gaussians(line_luma, line_sigma, 1.6 * line_sigma)
    ink = g.op(
        "Clip",
        g.op(
            "Mul",
            g.op("Sub", g.op("Neg", difference), g.scalar(line_threshold)),
            g.scalar(line_gain),
        ),
        g.scalar(0.0),
        g.scalar(1.0),
    )
    ink = g.op("Max", ink, lid)  # a closed lid's line, where the mesh says it is
    shade = g.op("Sub", g.scalar(1.0), g.op("Mul", ink, g.scalar(line_darkness)))
    catch = g.op("Mul", light, g.scalar(0.9))  # catch-lights: this much of the way to white

    # Every step after the smoothing scales each pixel's colour and adds to it, by amounts that
    # depend on the pixel alone: they are worked out on one channel and applied to the three
    # once, [0, 1] to [-1, 1] included. In the steps' own terms:
    #   flat = smooth * gain                                    the bands (hue kept)
    #   colourful = luma(flat) + (flat - luma(flat)) * stronger  colour a little stronger
    #   drawn = colourful * shade                                the outlines
    #   lit = drawn + (1 - drawn) * catch                        the catch-lights
    #   toon = lit * 2 - 1
    # and, as gain is the same in every channel, luma(flat) = luma * gain; so with
    # kept = 2 * shade * (1 - catch) and grey = luma * gain * (1 - stronger):
    #   toon = smooth * (gain * stronger * kept) + (grey * kept + 2 * catch - 1)
    kept = g.op("Mul", g.op("Mul", shade, g.op("Sub", g.scalar(1.0), catch)), g.scalar(2.0))
    colour_gain = g.op("Mul", g.op("Mul", gain, stronger), kept)
    grey = g.op("Mul", g.op("Mul", luma, gain), g.op("Sub", g.scalar(1.0), stronger))
    offset = g.op(
        "Add",
        g.op("Mul", grey, kept),
        g.op("Sub", g.op("Mul", catch, g.scalar(2.0)), g.scalar(1.0)),
    )
    toon = g.op("Add", g.op("Mul", smooth, colour_gain), offset)
    g.op("Clip", toon, g.scalar(-1.0), g.scalar(1.0), output=OUTPUT)
    model = g.model(
        "toon_filter", INPUT, OUTPUT, DESCRIPTION, ((FEATURES, ["N", len(ROWS), COLUMNS]),)
    )
    onnx.checker.check_model(model, full_check=True)
    return model
