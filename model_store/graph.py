"""A small ONNX graph builder for the models this project writes itself (toon-filter, cost-twin)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IMAGE_SHAPE = ["N", 3, "H", "W"]  # NCHW, any batch and size


class GraphBuilder:
    """Names nodes and constants as it goes; ``model()`` wraps them into an image-to-image model."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs) -> str:
        output = output or self.name(op_type.lower())
        # Named after their output: converters (fp16) name the casts they insert after nodes.
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def reflect_pad(self, x: str, pad: int) -> str:
        return self.op("Pad", x, self.ints(0, 0, pad, pad, 0, 0, pad, pad), mode="reflect")

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64))

    def scalar(self, value: float) -> str:
        return self.const(np.float32(value))

    def channel(self, x: str, index: int) -> str:
        """Channel ``index`` of (N, C, H, W), kept as (N, 1, H, W)."""
        return self.op("Slice", x, self.ints(index), self.ints(index + 1), self.ints(1))

    def grid_sample(self, x: str, grid: str) -> str:
        """ONNX's GridSample (bilinear, border padding, align_corners=0) of (N, C, H, W) ``x`` at
        ``grid`` (N, 2, H, W: x then y, in [-1, 1]), as four gathers and their blend: ONNX
        Runtime's own kernel took 9.8 ms of the offline default's 44 on a 512 px crop, this 3."""
        shape = self.op("Shape", x)
        height, width = (self.op("Slice", shape, self.ints(i), self.ints(i + 1)) for i in (2, 3))
        flat = self.ints(0, 0, -1)  # (N, C, H * W)
        corners, fractions = [], []
        for axis, size in ((0, width), (1, height)):
            side = self.op("Cast", size, to=TensorProto.FLOAT)
            last = self.op("Sub", side, self.scalar(1))
            along = self.channel(grid, axis)
            # In pixels, (g + 1) * size / 2 - 0.5, held inside the picture (border padding).
            scaled = self.op("Mul", self.op("Add", along, self.scalar(1)), side)
            pixel = self.op("Sub", self.op("Mul", scaled, self.scalar(0.5)), self.scalar(0.5))
            pixel = self.op("Min", self.op("Max", pixel, self.scalar(0)), last)
            # The upper-left corner, at most the last but one pixel: its neighbour is inside.
            low = self.op("Min", self.op("Floor", pixel), self.op("Sub", last, self.scalar(1)))
            fractions.append(self.op("Reshape", self.op("Sub", pixel, low), flat))
            corners.append(self.op("Cast", low, to=TensorProto.INT64))  # exact indices in fp16 too
        index = self.op("Add", self.op("Mul", corners[1], width), corners[0])
        index = self.op("Reshape", index, flat)
        pixels = self.op("Reshape", x, flat)
        every_channel = self.op("Shape", pixels)

        def gathered(offset: str | None) -> str:
            """The pixels ``offset`` after each upper-left corner, in every channel."""
            shifted = index if offset is None else self.op("Add", index, offset)
            shifted = self.op("Expand", shifted, every_channel)
            return self.op("GatherElements", pixels, shifted, axis=2)

        def between(a: str, b: str, fraction: str) -> str:
            return self.op("Add", a, self.op("Mul", fraction, self.op("Sub", b, a)))

        fx, fy = fractions
        top = between(gathered(None), gathered(self.ints(1)), fx)
        bottom = between(gathered(width), gathered(self.op("Add", width, self.ints(1))), fx)
        return self.op("Reshape", between(top, bottom, fy), shape)

    def model(
        self,
        name: str,
        image: str,
        output: str,
        description: str,
        more_inputs: tuple[tuple[str, list], ...] = (),
    ) -> onnx.ModelProto:
        """The model; ``more_inputs``: (name, shape) of float inputs after the image."""
        inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, IMAGE_SHAPE)]
        inputs += [
            helper.make_tensor_value_info(extra, TensorProto.FLOAT, shape)
            for extra, shape in more_inputs
        ]
        graph = helper.make_graph(
            self.nodes,
            name,
            inputs,
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, IMAGE_SHAPE)],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="toonify-serving"
        )
        model.ir_version = 9  # readable by every onnxruntime release that supports opset 17
        model.doc_string = description
        return model


def prelu_as_relu(model: onnx.ModelProto) -> int:
    """Rewrite every PRelu as Relu(x) - slope * Relu(-x), in place; returns how many.

    The same numbers bit for bit, but ONNX Runtime's PRelu broadcasts a (1, C, 1, 1) slope with
    a slow generic loop: it was half of MTCNN's R-Net time, and the rewrite runs MTCNN's three
    networks 1.6-1.8x faster (docs/performance.md).
    """
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        count += 1
        (x, slope), (y,) = node.input, node.output
        nodes += [
            helper.make_node("Relu", [x], [f"{y}/positive"]),
            helper.make_node("Neg", [x], [f"{y}/negated"]),
            helper.make_node("Relu", [f"{y}/negated"], [f"{y}/negative"]),
            helper.make_node("Mul", [f"{y}/negative", slope], [f"{y}/scaled"]),
            helper.make_node("Sub", [f"{y}/positive", f"{y}/scaled"], [y]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count
