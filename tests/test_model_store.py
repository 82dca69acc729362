"""The model store: defaults, imports with metadata, and clear refusals."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import bentoml
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from model_store import MODEL_FILE, detector_spec
from model_store.build import (
    ModelImportError,
    build_defaults,
    import_detector,
    import_generator,
    list_models,
    sha256_of,
)
from preprocess import create_detector
from toonify.generation.signature import GeneratorSignature

from .conftest import ROOT, asset


def test_defaults_are_registered_with_honest_metadata(default_models):
    generator, detector = default_models["toon-filter"], default_models["mtcnn"]
    meta = generator.info.metadata
    assert meta["kind"] == "generator" and meta["layout"] == "NCHW"
    assert meta["value_range"] == [-1.0, 1.0] and meta["size"] == 512
    assert "no learned weights" in meta["description"]
    assert meta["sha256"] == sha256_of(generator.path_of(MODEL_FILE))
    assert (
        detector.info.metadata["family"] == "mtcnn" and "MIT" in detector.info.metadata["licence"]
    )


def test_build_defaults_is_idempotent(default_models):
    again = {model.tag.name: model.tag for model in build_defaults()}
    assert again == {name: model.tag for name, model in default_models.items()}


def test_the_default_detector_is_mediapipe_and_mtcnn_where_it_was_not_stored(
    default_models, tmp_path
):
    from toonify.model_tags import stored_detector
    from toonify.settings import Settings

    default = Settings.model_fields["detector_model"].default
    assert default == "mediapipe-face:latest" and "mediapipe-face" in default_models
    assert stored_detector(default) == default
    assert stored_detector("mtcnn:latest") == "mtcnn:latest"  # a setting is taken as it is
    # A store that build-defaults filled without the package index: MTCNN serves, said so.
    code = "from toonify.model_tags import stored_detector as s; print(s('mediapipe-face:latest'))"
    answer = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"BENTOML_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.stdout.strip() == "mtcnn:latest", answer.stderr
    assert "build-defaults fetches it" in answer.stderr


def test_stored_detector_runs(default_models, astronaut):
    detector = create_detector(detector_spec(default_models["mtcnn"]))
    assert len(detector.detect(astronaut)) == 1


def test_animeganv3_import_records_signature_and_licence(learned_models):
    generator, detector = learned_models
    meta = generator.info.metadata
    assert (meta["layout"], meta["channel_order"], meta["size"]) == ("NHWC", "RGB", 512)
    assert meta["sha256"] == sha256_of(asset("animeganv3_tiny_cute.onnx"))
    assert "non-commercial" in meta["licence"]
    assert detector.info.metadata["family"] == "scrfd"
    assert {m.tag.name for m in list_models()} >= {"animeganv3", "scrfd-2.5g", "toon-filter"}


def test_wrong_layout_is_refused():
    with pytest.raises(ModelImportError, match="does not run"):
        import_generator(asset("animeganv3_tiny_cute.onnx"), "bad", GeneratorSignature("NCHW"), "x")


def _shrinking_model(path):
    """A model that runs but halves the image: not a generator of the declared size."""
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph(
        [node],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "h", "w"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)


def _two_input_model(path, second: str, shape: list) -> None:
    """The image plus the mean of a second input: a generator only if that input is the
    documented ``features``."""
    nodes = [
        helper.make_node("ReduceMean", [second], ["m"], keepdims=0),
        helper.make_node("Add", ["x", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"]),
            helper.make_tensor_value_info(second, TensorProto.FLOAT, shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)


def test_a_second_input_must_be_the_documented_features(tmp_path):
    from model_store.build import check_generator

    _two_input_model(tmp_path / "mask.onnx", "mask", ["N", 1, "H", "W"])
    with pytest.raises(ModelImportError, match="optionally 'features'"):
        check_generator(tmp_path / "mask.onnx", GeneratorSignature())
    _two_input_model(tmp_path / "rows.onnx", "features", ["N", 5, 7])  # the wrong width
    with pytest.raises(ModelImportError, match="optionally 'features'"):
        check_generator(tmp_path / "rows.onnx", GeneratorSignature())
    _two_input_model(tmp_path / "ok.onnx", "features", ["N", 5, 8])
    check_generator(tmp_path / "ok.onnx", GeneratorSignature())


def test_signature_mismatch_and_missing_files_are_refused(tmp_path):
    _shrinking_model(tmp_path / "half.onnx")
    with pytest.raises(ModelImportError, match="output shape"):
        import_generator(tmp_path / "half.onnx", "bad", GeneratorSignature(), "x")
    with pytest.raises(ModelImportError, match="no such model file"):
        import_generator(tmp_path / "absent.onnx", "bad", GeneratorSignature(), "x")
    (tmp_path / "junk.onnx").write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(ModelImportError, match="does not load"):
        import_generator(tmp_path / "junk.onnx", "bad", GeneratorSignature(), "x")
    with pytest.raises(ModelImportError, match="does not run as a yunet"):
        import_detector(tmp_path / "half.onnx", "bad", "yunet", "x")


@pytest.mark.slow  # a subprocess or a real timeout: `make test`, not test-fast
def test_cli_reports_errors_in_one_line(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_store",
            "import-generator",
            str(tmp_path / "no.onnx"),
            "--name",
            "x",
            "--licence",
            "x",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: no such model file")


def test_cli_lists_models(default_models):
    run = subprocess.run(
        [sys.executable, "-m", "model_store", "list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0
    assert "toon-filter:" in run.stdout and "detector mtcnn" in run.stdout


def test_import_measures_bf16_quality_on_real_faces(default_models, learned_models):
    pytest.importorskip("openvino")
    animegan, _ = learned_models
    assert animegan.info.metadata["bf16_psnr_db"] >= 35  # measured 52 dB: bf16 is used
    toon_filter = default_models["toon-filter"].info.metadata["bf16_psnr_db"]
    assert toon_filter < 35  # its rounding steps amplify bf16 error: stays in f32
    assert animegan.info.metadata["fp16_psnr_db"] >= 35
    assert (Path(animegan.path) / "fp16" / "model.onnx").is_file()
    assert (Path(animegan.path) / "openvino" / "model.xml").is_file()


@pytest.mark.slow  # builds the seed's pix2pixHD
def test_cost_twin_has_the_seed_architecture():
    from model_store.cost_twin import EXPECTED_PARAMETERS, build_cost_twin

    model, parameters = build_cost_twin()
    counted = sum(
        int(np.prod(t.dims)) for t in model.graph.initializer if t.name.startswith(("w_", "b_"))
    )
    assert parameters == counted == EXPECTED_PARAMETERS == 182_443_267
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("ConvTranspose") == 4 and ops.count("Add") == 9 and ops[-1] == "Tanh"
    assert ops.count("InstanceNormalization") == 1 + 4 + 18 + 4
    assert "COST TWIN" in model.doc_string


@pytest.mark.slow  # builds the seed's pix2pixHD
def test_build_twin_labels_it_everywhere(tmp_path):
    from model_store.build import build_twin
    from model_store.cost_twin import TwinShape

    model = build_twin(size=64, shape=TwinShape(ngf=4))
    meta = model.info.metadata
    assert meta["cost_twin"] is True and "COST TWIN" in meta["description"]
    assert model.info.labels["cost_twin"] == "true"
    assert (Path(model.path) / "cost_twin.weights").is_file()  # weights stay external


def small_generator(path: Path, outlier: float = 1.0, fixed_size: int | None = None) -> Path:
    """A small convolutional image-to-image model (conv, ReLU, conv, tanh) with seeded weights.

    ``outlier`` > 1 damages it for int8 only: the first conv's channel 0 is multiplied by it and
    the second conv's input channel 0 divided by it, which leaves fp32 unchanged (ReLU commutes
    with a positive scale) but gives the hidden activation one channel ``outlier`` times wider
    than the rest, which one int8 scale per tensor cannot hold. ``fixed_size`` fixes its input
    and output size, as some exports do.
    """
    rng = np.random.default_rng(0)
    first = rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32)
    second = rng.normal(0, 0.15, (3, 16, 3, 3)).astype(np.float32)
    first[0] *= outlier
    second[:, 0] /= outlier
    weights = [onnx.numpy_helper.from_array(a, n) for a, n in ((first, "w1"), (second, "w2"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["c"], ["y"]),
    ]
    image = ["N", 3, fixed_size or "H", fixed_size or "W"]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, image)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, image)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_import_measures_the_smaller_sizes_a_model_runs_at(default_models, tmp_path):
    """Fully convolutional models run at 3/4, 1/2 and 1/4 of their size, each with the quality
    of a toon made there against one made at full size; a fixed-size export runs at none, so the
    service has no reduced level for it."""
    meta = default_models["toon-filter"].info.metadata
    assert meta["reduced_sizes"] == [384, 256, 128]
    quality = meta["reduced_psnr_db"]
    assert 10 < quality["128"] < quality["256"] < quality["384"] < 60  # less detail when smaller
    loose = import_generator(
        small_generator(tmp_path / "loose.onnx"),
        "small-loose",
        GeneratorSignature(size=256),
        "test",
    )
    assert loose.info.metadata["reduced_sizes"] == [192, 128, 64]
    fixed = import_generator(
        small_generator(tmp_path / "fixed.onnx", fixed_size=256),
        "small-fixed",
        GeneratorSignature(size=256),
        "test",
    )
    assert fixed.info.metadata["reduced_sizes"] == []
    assert fixed.info.metadata["reduced_psnr_db"] == {}


def test_int8_is_measured_at_import_and_refused_when_it_would_show(tmp_path):
    """int8 only where the import measured it within the quality bar on held-out real faces:
    a model and its int8-damaged copy (same fp32 output) get different verdicts."""
    pytest.importorskip("nncf")
    from model_store import load_generator

    signature = GeneratorSignature(size=256)
    good = import_generator(small_generator(tmp_path / "good.onnx"), "small", signature, "test")
    damaged = import_generator(
        small_generator(tmp_path / "damaged.onnx", outlier=2000.0),
        "small-damaged",
        signature,
        "test",
    )
    good_psnr = good.info.metadata["int8_psnr_db"]
    damaged_psnr = damaged.info.metadata["int8_psnr_db"]
    assert good_psnr >= 35 > damaged_psnr, (good_psnr, damaged_psnr)
    assert (
        load_generator(good, backend="auto", providers="CPUExecutionProvider").precision == "int8"
    )
    refused = load_generator(damaged, backend="auto", providers="CPUExecutionProvider")
    assert refused.precision in ("bf16", "f32")
    assert (Path(good.path) / "openvino-int8" / "model.xml").is_file()


def test_animeganv3_int8_quality_is_stored(learned_models):
    """AnimeGANv3's int8 copy measures ~27 dB (its eyes lose colour: docs/images/
    precision-grid.jpg), so the service keeps it at bf16 (~50 dB)."""
    pytest.importorskip("nncf")
    from model_store import load_generator

    generator, _ = learned_models
    meta = generator.info.metadata
    assert 15 < meta["int8_psnr_db"] < 35 <= meta["bf16_psnr_db"]
    assert load_generator(generator, providers="CPUExecutionProvider").precision == "bf16"


def test_forcing_int8_without_an_int8_copy_says_how_to_get_one(tmp_path):
    from model_store import load_generator

    model = import_generator(
        small_generator(tmp_path / "m.onnx"), "no-int8", GeneratorSignature(size=256), "test"
    )
    shutil.rmtree(Path(model.path) / "openvino-int8", ignore_errors=True)
    with pytest.raises(FileNotFoundError, match="TOONIFY_PRECISION=auto"):
        load_generator(model, precision="int8", providers="CPUExecutionProvider")


def test_stored_mtcnn_has_no_prelu_and_finds_the_same_faces(default_models, t1_photo):
    """The model store rewrites PRelu for speed; the outputs must not move."""
    from preprocess import create_detector

    stored = bentoml.models.get("mtcnn:latest")
    assert stored.info.metadata["prelu_as_relu"] == 12  # 3 in P-Net, 4 in R-Net, 5 in O-Net
    for name in ("pnet.onnx", "rnet.onnx", "onet.onnx"):
        ops = {node.op_type for node in onnx.load(stored.path_of(name)).graph.node}
        assert "PRelu" not in ops and "Relu" in ops
    original = create_detector("mtcnn").detect(t1_photo)  # the wheel's files, as published
    rewritten = create_detector(detector_spec(stored)).detect(t1_photo)
    assert len(rewritten) == len(original) >= 5
    for a, b in zip(original, rewritten, strict=True):
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_a_detector_file_that_is_not_onnx_is_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelImportError, match="does not load"):
        import_detector(tmp_path / "junk.onnx", "junk", "scrfd", "x")
