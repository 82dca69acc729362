"""The generator worker: any ONNX image-to-image model on ONNX Runtime or OpenVINO
(``generator``), its stored signature (``signature``), and the batcher (``batching``)."""
