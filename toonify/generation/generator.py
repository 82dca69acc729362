"""Run any image-to-image ONNX generator on batches of aligned face crops.

Crops travel between services as uint8 NHWC RGB (four times smaller than float32); the model's
own signature (layout, value range, channel order, size) is applied here and nowhere else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from preprocess.features import FEATURES_INPUT, template_features

from .signature import GeneratorSignature

logger = logging.getLogger(__name__)

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def provider_options(providers: list[str], fp16: bool, cache_dir: Path | None) -> list:
    """ONNX Runtime's providers argument: TensorRT builds fp16 engines when the model allows it
    and caches them (an engine build takes minutes); CUDA runs the model file it is given."""
    configured: list = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            options: dict = {"trt_fp16_enable": fp16}
            if cache_dir is not None:
                options |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir / "tensorrt"),
                }
            configured.append((name, options))
        else:
            configured.append(name)
    return configured


def pick_providers(requested: str = "auto") -> list[str]:
    """Execution providers: the ones asked for, or the best this onnxruntime build offers."""
    available = ort.get_available_providers()
    if requested and requested != "auto":
        wanted = [name.strip() for name in requested.split(",") if name.strip()]
        missing = [name for name in wanted if name not in available]
        if missing:
            raise ValueError(f"providers {missing} are not available; this build has {available}")
        return wanted
    return [name for name in PROVIDER_PREFERENCE if name in available]


def default_threads() -> int:
    # Runtimes size their pools to the host's cores, not to this container's share.
    return len(os.sched_getaffinity(0))


def default_streams(backend: str, threads: int, providers: list[str]) -> int:
    """Crops run at once. ONNX Runtime on a CPU: one per core, up to four (its convolutions use a
    second thread poorly: the offline default answered 1.36x more crops a second on two single-
    thread streams than on one two-thread stream). OpenVINO: one, as its oneDNN kernels use every
    thread (two streams gained 1-13% on AnimeGANv3 and the twin and doubled a lone crop's time).
    One on a GPU. docs/performance.md."""
    if backend == "openvino" or providers[0] != "CPUExecutionProvider":
        return 1
    return max(1, min(threads, 4))


def default_max_batch(backend: str, streams: int, providers: list[str]) -> int:
    """Crops per batch. ONNX Runtime on a CPU with several streams: one job's crops, as a crop
    costs more in a batch there (the offline default 73 -> 81 CPU-ms a crop at two) and a free
    stream takes the next job; served at saturation, the generator's CPU an image 54.3 -> 50.8
    ms. Batches of up to eight elsewhere: a single OpenVINO stream or a GPU gains from them.
    docs/performance.md."""
    if backend == "onnxruntime" and streams > 1 and providers[0] == "CPUExecutionProvider":
        return 1
    return 8


def cpu_key() -> str:
    """Cached optimised graphs are specific to the CPU and the runtime version they were made on."""
    with open("/proc/cpuinfo") as info:
        model = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "")
    return hashlib.sha256(f"{model}|{ort.__version__}".encode()).hexdigest()[:12]


def openvino_version() -> str:
    try:
        import openvino

        return openvino.__version__
    except ImportError:
        return ""


class OnnxRuntimeRunner:
    """ONNX Runtime: CPU, or CUDA / TensorRT where the installed build offers them."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: Path,
        threads: int,
        providers: str,
        cache_dir: Path | None,
        fp16: bool = False,
        streams: int = 1,
    ) -> None:
        options = ort.SessionOptions()
        # One session serves concurrent runs: each run gets its share of the threads.
        options.intra_op_num_threads = max(1, threads // streams)
        options.inter_op_num_threads = 1
        # Its own arena: the serving workers hand buffers over 16 MB back to the system at once
        # (MALLOC_MMAP_THRESHOLD_, service.py), and without the arena each run's tensors were
        # fresh pages: the offline default 62 -> 49 ms a crop, 20 -> 34 crops/s, for 84 MB.
        options.enable_cpu_mem_arena = True
        source = path
        if cache_dir is not None:
            # Optimise once and keep the result: later starts load it with no optimisation
            # pass, weights memory-mapped from an external file (2.6 s -> 0.04 s for the twin).
            cached = cache_dir / f"{path.parent.name}-{cpu_key()}" / "model.opt.onnx"
            if cached.is_file():
                source = cached
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            else:
                cached.parent.mkdir(parents=True, exist_ok=True)
                options.optimized_model_filepath = str(cached)
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_file_name", "model.opt.weights"
                )
                options.add_session_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
                )
        chosen = provider_options(pick_providers(providers), fp16, cache_dir)
        self.session = ort.InferenceSession(str(source), options, providers=chosen)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        self.takes_features = any(i.name == FEATURES_INPUT for i in self.session.get_inputs())
        batch = model_input.shape[0] if model_input.shape else None
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.devices = self.session.get_providers()

    def run(self, tensor: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        feeds = {self.input_name: tensor}
        if self.takes_features:
            feeds[FEATURES_INPUT] = _features_for(tensor, features)
        return self.session.run([self.output_name], feeds)[0]


class OpenVinoRunner:
    """OpenVINO on the CPU: uses AMX / AVX-512 bf16 through oneDNN, which ONNX Runtime's CPU
    provider does not (the cost twin runs 4-6x faster in bf16 on a Sapphire Rapids core)."""

    backend = "openvino"

    def __init__(self, path: Path, threads: int, precision: str, streams: int = 1) -> None:
        import openvino

        core = openvino.Core()
        # No CACHE_DIR: its compiled blobs raised peak memory (1.3 -> 2.0 GB on the twin) and
        # loading an IR with fp16 weights already takes 0.2 s.
        config = {
            "INFERENCE_NUM_THREADS": threads,  # shared by the streams
            # An int8 IR carries its own quantized layers; what is left runs in f32.
            "INFERENCE_PRECISION_HINT": "f32" if precision == "int8" else precision,
            "NUM_STREAMS": streams,
        }
        compiled = core.compile_model(str(path), "CPU", config)
        # One request per stream; a run takes a free one (runs come from several threads).
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(streams):
            self.requests.put(compiled.create_infer_request())
        batch = compiled.input(0).get_partial_shape()[0]
        self.max_batch = batch.get_length() if batch.is_static else None
        self.takes_features = any(FEATURES_INPUT in port.get_names() for port in compiled.inputs)
        self.devices = [f"OpenVINO CPU {precision}"]

    def run(self, tensor: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        feeds: dict = {0: tensor}
        if self.takes_features:
            feeds[FEATURES_INPUT] = _features_for(tensor, features)
        request = self.requests.get()
        try:
            # The result views the request's buffer, which the next inference overwrites.
            return np.array(request.infer(feeds)[0])
        finally:
            self.requests.put(request)


def _features_for(tensor: np.ndarray, features: np.ndarray | None) -> np.ndarray:
    """The features input for a batch: as given, or FFHQ's frontal template for each crop."""
    if features is None:
        return template_features(len(tensor))
    if features.shape[0] != len(tensor):
        raise ValueError(f"{len(features)} feature rows for {len(tensor)} crops")
    return np.ascontiguousarray(features, dtype=np.float32)


def pick_backend(backend: str, providers: str, precision: str = "f32") -> str:
    """auto: OpenVINO for bf16 and int8 on CPU-only machines where it is installed (ONNX
    Runtime's CPU provider has neither); ONNX Runtime for f32, where it ran the offline default
    1.4x faster on one stream (1.9x on two) and starts faster (docs/performance.md), and on GPUs."""
    if backend != "auto":
        return backend
    gpu = any(p in ort.get_available_providers() for p in PROVIDER_PREFERENCE[:2])
    if gpu or providers not in ("auto", "CPUExecutionProvider") or precision == "f32":
        return "onnxruntime"
    return "openvino" if openvino_version() else "onnxruntime"


class OnnxGenerator:
    """Any ONNX image-to-image generator, run through its signature on the best backend here.

    ``model_path`` is the ONNX file, its fp16 copy for CUDA, or for OpenVINO its IR (model.xml).
    ``precision``: f32; bf16 or int8 (OpenVINO; int8 from an int8 IR); fp16 (TensorRT engines,
    or the fp16 file on CUDA).
    """

    def __init__(
        self,
        model_path: str | Path,
        signature: GeneratorSignature,
        threads: int | None = None,
        providers: str = "auto",
        backend: str = "onnxruntime",
        precision: str = "f32",
        cache_dir: str | Path | None = None,
        streams: int = 1,
    ) -> None:
        self.signature = signature
        path, cache = Path(model_path), Path(cache_dir) if cache_dir else None
        threads = threads or default_threads()
        backend = pick_backend(backend, providers, precision)
        # Runs that may be called at once, from different threads; 0: the backend's best.
        chosen = pick_providers(providers)
        self.streams = streams or default_streams(backend, threads, chosen)
        self.best_batch = default_max_batch(backend, self.streams, chosen)
        self.threads = threads
        started = time.perf_counter()
        if backend == "openvino":
            self.runner = OpenVinoRunner(path, threads, precision, self.streams)
        else:
            self.runner = OnnxRuntimeRunner(
                path, threads, providers, cache, precision == "fp16", self.streams
            )
        self.precision = precision
        self.load_seconds = time.perf_counter() - started
        # Some exports fix the batch axis at 1 (AnimeGANv3 does): feed those one crop at a time.
        self.max_batch = self.runner.max_batch

    @property
    def providers(self) -> list[str]:
        return self.runner.devices

    @property
    def takes_features(self) -> bool:
        """Whether the model reads where each crop's features are (preprocess/features.py)."""
        return self.runner.takes_features

    def __call__(self, crops: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops -> (N, H, W, 3) uint8 RGB toons; ``features`` (N, 5, 8)
        for a model that takes them (others ignore them; without, FFHQ's template).

        Crops of a size the model runs at (its own or a reduced one) run as they are; others are
        resized to the model's size and the toons back to theirs.
        """
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 crops, got {crops.shape} {crops.dtype}")
        height, width = crops.shape[1:3]
        if (height, width) != (self.run_size(height, width),) * 2:
            crops = resize_batch(crops, self.signature.size)
        tensor = self.signature.to_model_input(crops)
        step = self.max_batch or len(tensor)
        outputs = [
            self.runner.run(
                tensor[i : i + step], None if features is None else features[i : i + step]
            )
            for i in range(0, len(tensor), step)
        ]
        toons = self.signature.from_model_output(
            outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        )
        if toons.shape[1:3] != (height, width):
            toons = resize_batch(toons, height, width)
        return toons

    def run_size(self, height: int, width: int) -> int:
        """The side the model runs crops of this size at."""
        return height if height == width and height in self.signature.sizes else self.signature.size

    def warm_up(self, crop_sizes: tuple[int, ...] = ()) -> float:
        """One run on a grey crop at the model's size and at the size each of ``crop_sizes``
        runs at, so no user pays for lazy initialisation (a runtime prepares each new input
        shape on its first run)."""
        started = time.perf_counter()
        runs = {self.signature.size, *(self.run_size(side, side) for side in crop_sizes)}
        # One after the other: ONNX Runtime's first runs of two shapes at once on one session
        # left every later run of the larger 3-5x slower (the offline default: 45 -> 220 ms).
        for size in sorted(runs, reverse=True):
            self(np.full((1, size, size, 3), 128, dtype=np.uint8))
        return time.perf_counter() - started


def resize_batch(images: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    width = width or height
    return np.stack(
        [
            np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
            for image in images
        ]
    )
