"""How a generator wants its input: stored with the model, read by every service.

Only numpy here: the entry worker reads signatures (for the degrade ladder) without loading an
ONNX runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class GeneratorSignature:
    """How a generator wants its input; stored in the model's metadata."""

    layout: str = "NCHW"  # or "NHWC"
    value_range: tuple[float, float] = (-1.0, 1.0)
    size: int = 512
    channel_order: str = "RGB"  # or "BGR"
    # Smaller square sizes the model also runs at, returning the same size: measured at import
    # (fully convolutional models accept them). The service's reduced level generates at one.
    reduced_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel order must be RGB or BGR, not {self.channel_order!r}")
        low, high = self.value_range
        if not high > low:
            raise ValueError(f"value range {self.value_range} is empty")
        if self.size < 16:
            raise ValueError(f"size {self.size} is too small")
        if any(not 16 <= reduced < self.size for reduced in self.reduced_sizes):
            raise ValueError(f"reduced sizes {self.reduced_sizes} must lie in [16, {self.size})")

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every size the model runs at, its own first."""
        return (self.size, *self.reduced_sizes)

    def to_metadata(self) -> dict:
        data = asdict(self)
        data["value_range"] = list(self.value_range)
        data["reduced_sizes"] = list(self.reduced_sizes)
        return data

    @classmethod
    def from_metadata(cls, data: dict) -> GeneratorSignature:
        return cls(
            layout=data["layout"],
            value_range=tuple(float(v) for v in data["value_range"]),
            size=int(data["size"]),
            channel_order=data["channel_order"],
            reduced_sizes=tuple(int(v) for v in data.get("reduced_sizes") or ()),
        )

    def to_model_input(self, crops: np.ndarray) -> np.ndarray:
        """uint8 NHWC RGB crops of this size -> float32 tensor in the model's convention.

        One float array, made in its final layout and scaled in place: each temporary of a few
        MB (a 512 px crop is 3 MB in float32) is memory written and read once more."""
        low, high = self.value_range
        view = crops[..., ::-1] if self.channel_order == "BGR" else crops
        if self.layout == "NCHW":
            view = view.transpose(0, 3, 1, 2)
        tensor = np.empty(view.shape, dtype=np.float32)
        np.multiply(view, np.float32((high - low) / 255.0), out=tensor, dtype=np.float32)
        tensor += np.float32(low)
        return tensor

    def from_model_output(self, tensor: np.ndarray) -> np.ndarray:
        """The model's output tensor -> uint8 NHWC RGB (one float temporary, as above)."""
        if self.layout == "NCHW":
            tensor = tensor.transpose(0, 2, 3, 1)
        if self.channel_order == "BGR":
            tensor = tensor[..., ::-1]
        low, high = self.value_range
        scaled = np.subtract(tensor, np.float32(low), dtype=np.float32)
        scaled *= np.float32(255.0 / (high - low))
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, 255, out=scaled)
        return scaled.astype(np.uint8)
