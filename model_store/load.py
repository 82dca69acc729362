"""Loading stored models: what every serving worker imports (nothing that builds or imports).

Generators carry their signature (layout, value range, size, channel order) and the quality of
each reduced precision measured at import; detectors carry their family. The service reads all
of it here, so plugging in another ONNX generator is an import, not a code change.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bentoml

from toonify.generation.signature import GeneratorSignature

if TYPE_CHECKING:
    from toonify.generation.generator import OnnxGenerator
    from toonify.settings import Settings

MODEL_FILE = "model.onnx"
OPENVINO_IR = "openvino/model.xml"  # the same model for OpenVINO, weights stored in fp16
OPENVINO_INT8_IR = "openvino-int8/model.xml"  # post-training int8 (NNCF), calibrated on faces
FP16_MODEL = "fp16/model.onnx"  # fp16 copy for the CUDA provider


def detector_spec(model: bentoml.Model) -> str:
    """The ``create_detector`` spec for a stored detector."""
    family = model.info.metadata["family"]
    location = model.path if family in ("mtcnn", "mediapipe") else model.path_of(MODEL_FILE)
    return f"{family}:{location}"


# Fastest first: int8 (VNNI on AMD and Intel, AMX-INT8 on Intel), then bf16 (AMX, AVX-512 BF16).
CPU_PRECISIONS = ("int8", "bf16")


def choose_precision(requested: str, metadata: dict, min_psnr_db: float, gpu: bool = False) -> str:
    """The fastest reduced precision whose import measured it close enough to fp32 on real
    faces (fp16 on a GPU; int8, then bf16 on a CPU); else f32."""
    if requested != "auto":
        return requested
    for reduced in ("fp16",) if gpu else CPU_PRECISIONS:
        psnr = metadata.get(f"{reduced}_psnr_db")
        if psnr is not None and psnr >= min_psnr_db:
            return reduced
    return "f32"


def load_generator(
    model: bentoml.Model,
    *,
    threads: int | None = None,
    providers: str = "auto",
    backend: str = "auto",
    precision: str = "auto",
    min_psnr_db: float = 35.0,
    cache_dir: str | Path | None = None,
    streams: int = 1,  # 0: the backend's best (default_streams)
) -> OnnxGenerator:
    """A stored generator, run from the file whose quality its import measured: the int8 IR, the
    IR for bf16, the fp16 copy on CUDA (TensorRT builds fp16 engines from the fp32 file), else
    the ONNX."""
    # Here, not at the top: the preprocessing worker imports this module for detector_spec and
    # never runs a generator.
    from toonify.generation.generator import OnnxGenerator, pick_providers

    metadata = model.info.metadata
    chosen = pick_providers(providers)
    gpu = chosen[0] != "CPUExecutionProvider"
    precision = choose_precision(precision, metadata, min_psnr_db, gpu)
    path = Path(model.path_of(MODEL_FILE))
    if precision == "int8":
        path = Path(model.path_of(OPENVINO_INT8_IR))
        if not path.is_file():  # forced by TOONIFY_PRECISION, but never quantized
            raise FileNotFoundError(
                f"{model.tag} has no int8 copy: re-import it with OpenVINO and NNCF installed "
                "(requirements-dev.txt), or set TOONIFY_PRECISION=auto"
            )
    elif precision == "bf16" and Path(model.path_of(OPENVINO_IR)).is_file():
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
        streams=streams,
    )


def load_configured_generator(
    model: bentoml.Model, settings: Settings, cache_dir: Path
) -> OnnxGenerator:
    """``model`` as the generator service runs it under ``settings`` (threads, streams,
    providers, backend, precision and its quality bar)."""
    return load_generator(
        model,
        threads=settings.generator_threads or None,
        streams=settings.generator_streams,
        providers=settings.providers,
        backend=settings.backend,
        precision=settings.precision,
        min_psnr_db=settings.min_psnr_db,
        cache_dir=cache_dir,
    )
