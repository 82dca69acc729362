"""Loading stored models: what every serving worker imports (nothing that builds or imports).

Generators carry their signature (layout, value range, size, channel order) and the quality of
each reduced precision measured at import; detectors carry their family. The service reads all
of it here, so plugging in another ONNX generator is an import, not a code change.
"""

from __future__ import annotations

from pathlib import Path

import bentoml

from toonify.generator import GeneratorSignature, OnnxGenerator, pick_providers

MODEL_FILE = "model.onnx"
OPENVINO_IR = "openvino/model.xml"  # the same model for OpenVINO, weights stored in fp16
FP16_MODEL = "fp16/model.onnx"  # fp16 copy for the CUDA provider


def detector_spec(model: bentoml.Model) -> str:
    """The ``create_detector`` spec for a stored detector."""
    family = model.info.metadata["family"]
    location = model.path if family == "mtcnn" else model.path_of(MODEL_FILE)
    return f"{family}:{location}"


def choose_precision(requested: str, metadata: dict, min_psnr_db: float, gpu: bool = False) -> str:
    """Reduced precision (fp16 on a GPU, bf16 on a CPU) only where the model's import measured
    it close enough to fp32 on real faces."""
    if requested != "auto":
        return requested
    reduced = "fp16" if gpu else "bf16"
    psnr = metadata.get(f"{reduced}_psnr_db")
    return reduced if psnr is not None and psnr >= min_psnr_db else "f32"


def load_generator(
    model: bentoml.Model,
    *,
    threads: int | None = None,
    providers: str = "auto",
    backend: str = "auto",
    precision: str = "auto",
    min_psnr_db: float = 35.0,
    cache_dir: str | Path | None = None,
) -> OnnxGenerator:
    """A stored generator, run from the file whose quality its import measured: the IR for
    bf16, the fp16 copy on CUDA (TensorRT builds fp16 engines from the fp32 file), else the ONNX."""
    metadata = model.info.metadata
    chosen = pick_providers(providers)
    gpu = chosen[0] != "CPUExecutionProvider"
    precision = choose_precision(precision, metadata, min_psnr_db, gpu)
    path = Path(model.path_of(MODEL_FILE))
    if precision == "bf16" and Path(model.path_of(OPENVINO_IR)).is_file():
        path = Path(model.path_of(OPENVINO_IR))
    elif precision == "fp16" and chosen[0] == "CUDAExecutionProvider":
        path = Path(model.path_of(FP16_MODEL))
    return OnnxGenerator(
        path,
        GeneratorSignature.from_metadata(metadata),
        threads=threads,
        providers=providers,
        backend="openvino" if path.suffix == ".xml" else backend,
        precision=precision,
        cache_dir=cache_dir,
    )
