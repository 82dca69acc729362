"""``toon-filter``: a procedural toon stylizer compiled to ONNX. No learned weights.

It is the honest offline default: the service runs end to end with nothing downloaded, and the
face comes back reshaped and drawn, but by fixed rules, not a trained toon generator. It relies
on what every crop the generator sees has in common: FFHQ alignment puts the eyes, nose and mouth
at known places in the frame (``FEATURES``). Steps, all on [0, 1] RGB:

1. **shape**: one smooth, fixed warp field (``GridSample``) enlarges the eyes, shrinks the nose
   and mouth, and pulls the jaw in a little. Each feature's field scales everything inside its
   inner ellipse by one factor and fades to nothing at ``falloff`` times that ellipse, so the
   documented factors hold exactly where the feature is and nothing tears (the build checks the
   field never folds);
2. **smooth skin and hair**: a wide edge-preserving (guided) filter, then a narrow one;
3. **cel shading**: lightness in soft-edged bands (no blotches where texture sits on a band
   edge), hue kept, colour a little stronger;
4. **outlines**: thin dark lines from a difference of Gaussians of the smoothed lightness.

Signature, the same as a pix2pixHD Toonify export: NCHW RGB float32 in [-1, 1], 512x512 (the
graph accepts any size; the warp field is resized to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .graph import GraphBuilder

INPUT, OUTPUT = "image", "toon"
FRAME = 512  # the aligned frame the features are placed in
DESCRIPTION = (
    "Procedural toon filter: a fixed warp of the FFHQ-aligned frame (larger eyes, smaller nose "
    "and mouth, softer jaw), guided-filter smoothing, soft cel-shading bands and "
    "difference-of-Gaussians outlines, compiled to ONNX; no learned weights. A stand-in so the "
    "service runs offline, not a trained toon generator."
)


@dataclass(frozen=True)
class Feature:
    """One region of the aligned frame, scaled by ``factor`` inside its inner ellipse (centre,
    half-axes in 512-frame pixels) and left alone beyond ``falloff`` times that ellipse."""

    name: str
    centre: tuple[float, float]
    half_axes: tuple[float, float]
    factor: float
    falloff: float = 1.8


# Where FFHQ alignment puts each feature (the mean of MTCNN's landmarks on aligned real faces:
# eyes (194, 243) and (318, 243), mouth corners at y = 371), and how much each changes.
FEATURES = (
    Feature("left eye", (194.0, 243.0), (34.0, 28.0), 1.35),
    Feature("right eye", (318.0, 243.0), (34.0, 28.0), 1.35),
    Feature("nose", (256.0, 305.0), (22.0, 22.0), 0.85, falloff=2.0),
    Feature("mouth", (256.0, 372.0), (50.0, 24.0), 0.88, falloff=2.0),
)
JAW_PULL = 0.06  # the lower cheeks and jaw move this fraction of their distance inwards
JAW_BAND = (360.0, 500.0)  # rows of the frame the pull covers, fading in and out
JAW_REACH = 210.0  # columns further than this from the centre line are left alone


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def warp_field(size: int = FRAME) -> np.ndarray:
    """For each output pixel of a ``size`` frame, the input pixel it shows: (size, size, 2) x, y.

    Built at 512 and scaled, so the features sit at the same relative places at any size.
    """
    scale = size / FRAME
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / scale  # in 512-frame pixels
    source_x, source_y = x.copy(), y.copy()
    for feature in FEATURES:
        cx, cy = feature.centre
        ax, ay = feature.half_axes
        radius = np.hypot((x - cx) / ax, (y - cy) / ay)  # 1 on the inner ellipse
        blend = _smoothstep((radius - 1.0) / (feature.falloff - 1.0))
        # Inside: sample 1/factor as far from the centre (magnify for factor > 1).
        shrink = 1.0 / feature.factor + (1.0 - 1.0 / feature.factor) * blend
        source_x += (x - cx) * (shrink - 1.0)
        source_y += (y - cy) * (shrink - 1.0)
    low, high = JAW_BAND
    rows = _smoothstep((y - low) / 40.0) * _smoothstep((high - y) / 40.0)
    side = np.abs(x - FRAME / 2) / JAW_REACH
    columns = np.sin(np.pi * np.clip(side, 0.0, 1.0))  # 0 at the centre line and past the reach
    source_x += (x - FRAME / 2) * JAW_PULL * rows * columns
    return np.stack([source_x, source_y], axis=-1) * scale


def fold_margin(field: np.ndarray) -> float:
    """The smallest Jacobian determinant of the field: > 0 means it never folds or tears."""
    dx_dx = np.gradient(field[..., 0], axis=1)
    dx_dy = np.gradient(field[..., 0], axis=0)
    dy_dx = np.gradient(field[..., 1], axis=1)
    dy_dy = np.gradient(field[..., 1], axis=0)
    return float(np.min(dx_dx * dy_dy - dx_dy * dy_dx))


class _Graph(GraphBuilder):
    """The filter's building blocks on top of the generic builder."""

    def scalar(self, value: float) -> str:
        return self.const(np.float32(value))

    def separable(self, x: str, taps: np.ndarray, channels: int) -> str:
        """A symmetric 1-D filter along rows then columns, per channel, reflecting at the edge.

        One pad for both passes, then two unpadded convolutions.
        """
        row = np.tile(taps.astype(np.float32).reshape(1, 1, 1, -1), (channels, 1, 1, 1))
        x = self.op("Conv", self.reflect_pad(x, len(taps) // 2), self.const(row), group=channels)
        column = row.transpose(0, 1, 3, 2)
        return self.op("Conv", x, self.const(column), group=channels)

    def box(self, x: str, radius: int, channels: int = 3) -> str:
        return self.separable(x, np.full(2 * radius + 1, 1.0 / (2 * radius + 1)), channels)

    def gaussian(self, x: str, sigma: float, channels: int = 1) -> str:
        offsets = np.arange(-int(np.ceil(3 * sigma)), int(np.ceil(3 * sigma)) + 1)
        taps = np.exp(-0.5 * (offsets / sigma) ** 2)
        return self.separable(x, taps / taps.sum(), channels)

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

    def resize_like(self, x: str, like: str) -> str:
        """``x`` resized (bilinear) to the height and width of ``like``; its own batch and
        channels kept."""
        batch_channels = self.op(
            "Slice",
            self.op("Shape", x),
            self.const(np.array([0], np.int64)),
            self.const(np.array([2], np.int64)),
        )
        height_width = self.op(
            "Slice",
            self.op("Shape", like),
            self.const(np.array([2], np.int64)),
            self.const(np.array([4], np.int64)),
        )
        sizes = self.op("Concat", batch_channels, height_width, axis=0)
        return self.op("Resize", x, "", "", sizes, mode="linear")

    def warp(self, x: str, field: np.ndarray) -> str:
        """Sample ``x`` at the field's positions, the field resized to x's height and width."""
        size = field.shape[0]
        normalised = (field + 0.5) / size * 2.0 - 1.0  # GridSample's units, align_corners=0
        grid = self.const(normalised.transpose(2, 0, 1)[None].astype(np.float32))  # 1,2,H,W
        shape = self.op("Shape", x)
        batch = self.op(
            "Slice", shape, self.const(np.array([0], np.int64)), self.const(np.array([1], np.int64))
        )
        resized = self.resize_like(grid, x)
        per_pixel = self.op("Transpose", resized, perm=[0, 2, 3, 1])  # 1,H,W,2
        expanded = self.op(
            "Expand",
            per_pixel,
            self.op("Concat", batch, self.const(np.array([1, 1, 2], np.int64)), axis=0),
        )
        return self.op(
            "GridSample", x, expanded, mode="bilinear", padding_mode="border", align_corners=0
        )


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
) -> onnx.ModelProto:
    """The graph. ``levels`` shading bands whose edges blend over ``band_softness`` of a band,
    mixed ``band_mix`` into the smooth shading; outlines where the difference of Gaussians
    (sigma ``line_sigma`` and 1.6x) falls below ``-line_threshold``."""
    field = warp_field()
    margin = fold_margin(field)
    if margin <= 0.2:  # the warp would fold the picture over itself somewhere
        raise ValueError(f"the warp field folds (smallest Jacobian {margin:.3f})")
    g = _Graph()
    x = g.op("Mul", g.op("Add", INPUT, g.scalar(1.0)), g.scalar(0.5))
    shaped = g.warp(x, field)
    lightly = g.guided_smooth(shaped, 3, 0.005)
    smooth = g.guided_smooth(g.guided_smooth(shaped, 8, 0.02, subsample=2), 3, 0.005)

    # Cel shading: flat bands of lightness, hue kept, then colour a little stronger. The bands
    # follow a blurred lightness, so texture (hair, stubble) never cuts a band into blotches.
    luma = g.op("Conv", smooth, g.const(LUMA))
    broad = g.gaussian(luma, band_blur)
    steps = g.op("Mul", broad, g.scalar(levels))
    floor = g.op("Floor", steps)
    within = g.op("Sub", steps, floor)  # 0..1 inside a band
    edge = g.op("Div", g.op("Sub", within, g.scalar(1.0 - band_softness)), g.scalar(band_softness))
    ramp = g.op("Clip", edge, g.scalar(0.0), g.scalar(1.0))
    banded = g.op("Div", g.op("Add", g.op("Add", floor, g.scalar(0.5)), ramp), g.scalar(levels))
    banded = g.op(
        "Add", g.op("Mul", banded, g.scalar(band_mix)), g.op("Mul", luma, g.scalar(1.0 - band_mix))
    )
    gain = g.op("Div", banded, g.op("Add", luma, g.scalar(0.02)))
    flat = g.op("Mul", smooth, g.op("Clip", gain, g.scalar(0.5), g.scalar(1.6)))
    flat_luma = g.op("Conv", flat, g.const(LUMA))
    colourful = g.op(
        "Add", flat_luma, g.op("Mul", g.op("Sub", flat, flat_luma), g.scalar(saturation))
    )

    # Outlines: the dark side of a difference of Gaussians of the lightly smoothed picture.
    line_luma = g.op("Conv", lightly, g.const(LUMA))
    difference = g.op(
        "Sub", g.gaussian(line_luma, line_sigma), g.gaussian(line_luma, 1.6 * line_sigma)
    )
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
    shade = g.op("Sub", g.scalar(1.0), g.op("Mul", ink, g.scalar(line_darkness)))
    drawn = g.op("Mul", colourful, shade)

    scaled = g.op("Sub", g.op("Mul", drawn, g.scalar(2.0)), g.scalar(1.0))
    g.op("Clip", scaled, g.scalar(-1.0), g.scalar(1.0), output=OUTPUT)
    model = g.model("toon_filter", INPUT, OUTPUT, DESCRIPTION)
    onnx.checker.check_model(model, full_check=True)
    return model
