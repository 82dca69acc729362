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
        pads = self.const(np.array([0, 0, pad, pad, 0, 0, pad, pad], dtype=np.int64))
        return self.op("Pad", x, pads, mode="reflect")

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
