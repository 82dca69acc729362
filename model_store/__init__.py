"""Models in the BentoML model store, with the metadata that says how to run them.

Serving workers import this package for ``load_generator`` and ``detector_spec`` only;
building, importing and measuring models (``model_store.build``, the CLI) are separate so that a
worker never imports ONNX tooling.
"""

from .load import (
    FP16_MODEL,
    MODEL_FILE,
    OPENVINO_IR,
    choose_precision,
    detector_spec,
    load_generator,
)

__all__ = [
    "FP16_MODEL",
    "MODEL_FILE",
    "OPENVINO_INT8_IR",
    "OPENVINO_IR",
    "choose_precision",
    "detector_spec",
    "load_generator",
]
