"""The generator runtime: signature conversions, providers, the toon-filter default."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from model_store.toon_filter import build_toon_filter
from preprocess.features import template_features
from toonify.generation.generator import OnnxGenerator, pick_providers
from toonify.generation.signature import GeneratorSignature


@pytest.fixture(scope="module")
def toon_filter_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "toon_filter.onnx"
    onnx.save(build_toon_filter(), path)
    return path


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)])
def test_signature_round_trip(layout, channel_order, value_range):
    signature = GeneratorSignature(layout, value_range, 32, channel_order)
    crops = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    tensor = signature.to_model_input(crops)
    assert tensor.dtype == np.float32
    assert tensor.shape == ((2, 3, 32, 32) if layout == "NCHW" else (2, 32, 32, 3))
    assert tensor.min() >= value_range[0] and tensor.max() <= value_range[1]
    np.testing.assert_array_equal(signature.from_model_output(tensor), crops)


def test_signature_conventions_are_the_documented_ones():
    red = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    nchw_bgr = GeneratorSignature("NCHW", (-1.0, 1.0), 16, "BGR").to_model_input(red)
    assert nchw_bgr[0, 2].min() == 1.0 and nchw_bgr[0, 0].max() == -1.0  # red is channel 2


def test_signature_rejects_nonsense():
    for bad in [
        dict(layout="CHW"),
        dict(channel_order="RGBA"),
        dict(value_range=(1.0, 1.0)),
        dict(size=4),
    ]:
        with pytest.raises(ValueError):
            GeneratorSignature(**bad)
    signature = GeneratorSignature("NHWC", (0.0, 255.0), 256, "BGR")
    assert GeneratorSignature.from_metadata(signature.to_metadata()) == signature


def test_toon_filter_changes_faces_keeps_shape(toon_filter_path, astronaut):
    generator = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=1)
    crop = np.asarray(astronaut)[None]
    toon = generator(crop)
    assert toon.shape == crop.shape and toon.dtype == np.uint8
    assert np.abs(toon.astype(int) - crop).mean() > 8  # visibly stylised
    assert np.abs(toon.astype(int) - crop).mean() < 60  # but still the same picture
    np.testing.assert_array_equal(generator(crop), toon)  # deterministic
    assert generator.warm_up() > 0


def test_crops_of_another_size_are_resized_both_ways(toon_filter_path, astronaut):
    generator = OnnxGenerator(toon_filter_path, GeneratorSignature(size=256), threads=1)
    crops = np.stack([np.asarray(astronaut)] * 2)
    assert generator(crops).shape == (2, 512, 512, 3)


def test_crops_of_a_reduced_size_run_at_that_size(toon_filter_path, astronaut):
    """A model that declares a reduced size runs crops of that size as they are (what the
    degrade ladder's reduced level relies on); one that does not resizes them to its own."""
    crop = np.asarray(astronaut.resize((256, 256)))[None]
    scalable = OnnxGenerator(toon_filter_path, GeneratorSignature(reduced_sizes=(256,)), threads=1)
    fixed = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=1)
    assert (scalable.run_size(256, 256), fixed.run_size(256, 256)) == (256, 512)
    assert scalable.run_size(200, 200) == 512
    native = scalable.signature.from_model_output(
        scalable.runner.run(scalable.signature.to_model_input(crop))
    )
    np.testing.assert_array_equal(scalable(crop), native)
    resized = fixed(crop)
    assert resized.shape == native.shape
    assert np.abs(resized.astype(int) - native).mean() > 2  # made at 512, then scaled down


def test_reduced_sizes_are_checked_and_stored(toon_filter_path):
    signature = GeneratorSignature(reduced_sizes=(384, 256))
    assert signature.sizes == (512, 384, 256)
    assert GeneratorSignature.from_metadata(signature.to_metadata()) == signature
    legacy = GeneratorSignature().to_metadata()
    del legacy["reduced_sizes"]  # stored before reduced sizes were measured
    assert GeneratorSignature.from_metadata(legacy).reduced_sizes == ()
    for bad in [(512,), (1024,), (8,)]:
        with pytest.raises(ValueError, match="reduced sizes"):
            GeneratorSignature(reduced_sizes=bad)


def test_generator_refuses_wrong_input(toon_filter_path):
    generator = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=1)
    with pytest.raises(ValueError):
        generator(np.zeros((512, 512, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        generator(np.zeros((1, 512, 512, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="feature rows"):
        generator(np.zeros((2, 512, 512, 3), dtype=np.uint8), template_features(1))


def test_providers_auto_and_explicit():
    assert pick_providers("auto")[-1] == "CPUExecutionProvider"
    assert pick_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="not available"):
        pick_providers("NoSuchExecutionProvider")


def test_models_with_a_fixed_batch_of_one_get_one_crop_at_a_time(astronaut):
    from .conftest import asset

    signature = GeneratorSignature("NHWC", (-1.0, 1.0), 256)
    generator = OnnxGenerator(asset("animeganv3_tiny_cute.onnx"), signature, threads=1)
    assert generator.max_batch == 1
    crops = np.stack([np.asarray(astronaut.resize((256, 256)))] * 3)
    toons = generator(crops)
    assert toons.shape == crops.shape
    np.testing.assert_array_equal(toons[0], toons[2])
    # A generator without a features input runs the same with or without them.
    assert not generator.takes_features
    np.testing.assert_array_equal(generator(crops, template_features(3) * 1.1), toons)


def test_openvino_backend_matches_onnxruntime_in_f32(toon_filter_path, astronaut):
    pytest.importorskip("openvino")
    crop = np.asarray(astronaut)[None]
    reference = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=1)(crop)
    openvino = OnnxGenerator(toon_filter_path, GeneratorSignature(), backend="openvino")
    assert openvino.providers == ["OpenVINO CPU f32"]
    assert np.abs(openvino(crop).astype(int) - reference).mean() < 0.5
    # The features reach OpenVINO's request too.
    features = template_features(1)
    features[0, :2, 5:] = [1.0, 1.0, 0.0]  # both eyes closed: drawn as lids, not enlarged
    assert openvino.takes_features
    closed = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=1)(crop, features)
    assert np.abs(closed.astype(int) - reference).mean() > 0.5
    assert np.abs(openvino(crop, features).astype(int) - closed).mean() < 0.5


def test_optimised_graph_is_cached_and_reused(toon_filter_path, tmp_path, astronaut):
    crop = np.asarray(astronaut)[None]
    first = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=1, cache_dir=tmp_path)
    cached = list(tmp_path.glob("*/model.opt.onnx"))
    assert len(cached) == 1
    second = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(first(crop), second(crop))


def test_precision_follows_the_measured_psnr():
    from model_store import choose_precision

    assert choose_precision("auto", {"bf16_psnr_db": 52.4}, 35.0) == "bf16"
    assert choose_precision("auto", {"bf16_psnr_db": 30.6}, 35.0) == "f32"
    assert choose_precision("auto", {}, 35.0) == "f32"
    assert choose_precision("bf16", {"bf16_psnr_db": 1.0}, 35.0) == "bf16"
    on_gpu = {"bf16_psnr_db": 52.4, "fp16_psnr_db": 30.0}
    assert choose_precision("auto", on_gpu, 35.0, gpu=True) == "f32"
    assert choose_precision("auto", {"fp16_psnr_db": 60.0}, 35.0, gpu=True) == "fp16"


def test_gpu_providers_come_first_and_tensorrt_gets_fp16_and_a_cache(monkeypatch, tmp_path):
    from toonify.generation import generator

    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(generator.ort, "get_available_providers", lambda: everything)
    assert pick_providers("auto") == everything
    assert generator.pick_backend("auto", "auto", "bf16") == "onnxruntime"  # GPUs: not OpenVINO
    assert generator.default_streams("onnxruntime", 8, pick_providers("auto")) == 1
    assert generator.default_max_batch("onnxruntime", 1, pick_providers("auto")) == 8  # batched
    configured = generator.provider_options(everything, fp16=True, cache_dir=tmp_path)
    tensorrt, options = configured[0]
    assert tensorrt == "TensorrtExecutionProvider" and options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    assert configured[1:] == everything[1:]
    assert generator.provider_options(everything, False, None)[0][1] == {"trt_fp16_enable": False}


def test_fp16_conversion_keeps_float32_io_and_the_learned_look(tmp_path, astronaut):
    import onnx

    from model_store.build import convert_to_fp16

    from .conftest import asset

    source = asset("animeganv3_tiny_cute.onnx")
    converted = convert_to_fp16(source, tmp_path / "fp16" / "model.onnx")
    model = onnx.load(str(converted))
    weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    signature = GeneratorSignature("NHWC", (-1.0, 1.0), 256)
    crop = np.asarray(astronaut.resize((256, 256)))[None]
    reference = OnnxGenerator(source, signature, threads=1)(crop).astype(float)
    half = OnnxGenerator(converted, signature, threads=1)(crop)
    assert 10 * np.log10(255**2 / np.mean((reference - half) ** 2)) >= 35


def test_on_a_cpu_f32_runs_on_onnx_runtime_with_a_stream_per_core_and_reduced_on_openvino():
    """Several ONNX Runtime streams on a CPU take a job each, unbatched; one OpenVINO stream
    batches what waits."""
    from toonify.generation import generator

    cpu = ["CPUExecutionProvider"]
    assert generator.pick_backend("auto", "auto", "f32") == "onnxruntime"
    assert generator.pick_backend("auto", "auto", "bf16") == "openvino"
    assert generator.pick_backend("auto", "auto", "int8") == "openvino"
    assert generator.pick_backend("openvino", "auto", "f32") == "openvino"  # asked for
    assert [generator.default_streams("onnxruntime", n, cpu) for n in (1, 2, 8)] == [1, 2, 4]
    assert generator.default_streams("openvino", 8, cpu) == 1
    assert [generator.default_max_batch("onnxruntime", n, cpu) for n in (1, 2, 4)] == [8, 1, 1]
    assert generator.default_max_batch("openvino", 1, cpu) == 8


def test_streams_run_crops_at_once_with_the_same_answers(toon_filter_path, astronaut):
    """Two streams called from two threads at once give each caller its own crop's toon, as one
    stream does, on both backends."""
    from concurrent.futures import ThreadPoolExecutor

    crop = np.asarray(astronaut)
    crops = [crop[None], np.ascontiguousarray(crop[None, :, ::-1])]
    for backend in ("onnxruntime", "openvino"):
        one = OnnxGenerator(toon_filter_path, GeneratorSignature(), threads=2, backend=backend)
        two = OnnxGenerator(
            toon_filter_path, GeneratorSignature(), threads=2, backend=backend, streams=2
        )
        assert two.streams == 2
        expected = [one(crop) for crop in crops]
        with ThreadPoolExecutor(2) as pool:
            for _ in range(3):
                answers = list(pool.map(two, crops))
                for answer, wanted in zip(answers, expected, strict=True):
                    assert np.abs(answer.astype(int) - wanted).max() <= 2, backend
        assert not np.array_equal(expected[0], expected[1])  # the two callers' crops differ
