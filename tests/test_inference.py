"""fer_hf.inference: the fast runtime of the demo and the predict CLI gives the fp32 eager model's answers."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification
from transformers import ViTImageProcessorPil

from fer_hf import FER_CNN_VARIANTS, FerCNNForImageClassification, FerConfig, FerImageProcessor, inference
from fer_hf.faces import FaceDetector, FaceExpressionRecognizer
from fer_hf.inference import FerPixels, InferenceRunner, Int8FerCNN, bf16_supported, default_mode

MODES = ["onnx-int8", "onnx-fp32", "int8", "bf16", "fp32", "eager"]
# Largest |p - p_fp32| allowed for one class of one face on random faces and a random tiny model
# (whose probabilities are near uniform): int8 rounds each activation to 1/255 of its range.
RANDOM_MODEL_TOLERANCE = {"onnx-int8": 0.03, "onnx-fp32": 1e-5, "int8": 0.03, "bf16": 0.02, "fp32": 1e-5, "eager": 0.0}


def random_faces(count=40, size=(48, 48), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    shape = (size[1], size[0], *channels)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(count)]


@pytest.fixture(scope="module")
def tiny_fer():
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[8, 16, 16], depths=[1, 2, 1])).eval()
    with torch.no_grad():  # batch-norm statistics as a trained model has them, so int8 ranges are not trivial
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.2, 0.2)
    return model, FerImageProcessor()


def fp32_eager(model, processor, faces):
    with torch.inference_mode():
        logits = model(pixel_values=processor(faces, return_tensors="pt")["pixel_values"]).logits
    return logits.softmax(-1).numpy()


# ------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("size, mode", [((48, 48), "L"), ((48, 48), "RGB"), ((61, 57), "L"), ((30, 30), "RGB")])
def test_fast_pixels_are_the_processors_pixels(size, mode):
    processor = FerImageProcessor()
    faces = random_faces(9, size, mode)
    pixels = FerPixels.from_processor(processor)
    fast = torch.from_numpy(pixels(faces))
    assert torch.equal(fast, processor(faces, return_tensors="pt")["pixel_values"])  # bit for bit


def test_other_inputs_go_through_the_processor(tiny_fer):
    model, processor = tiny_fer
    runner = InferenceRunner(model, processor, "fp32")
    rgba, array = random_faces(3, mode="RGBA"), [np.full((48, 48), 128, dtype=np.uint8)]
    assert FerPixels.from_processor(processor)(rgba) is None  # alpha goes on white in the processor
    for faces in (rgba, array):
        assert torch.equal(runner.pixel_values(faces), processor(faces, return_tensors="pt")["pixel_values"])
    # A processor with other steps than the usual ones is not imitated.
    assert FerPixels.from_processor(FerImageProcessor(do_normalize=False)) is None
    assert FerPixels.from_processor(ViTImageProcessorPil()) is None


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_int8_input_quantization_is_lossless():
    pixels = FerPixels.from_processor(FerImageProcessor())
    every_value = np.resize(np.arange(256, dtype=np.uint8), (48, 48))  # each uint8 value, 9 times
    scale, zero_point, shift = pixels.input_scale()
    normalized = torch.from_numpy(pixels([Image.fromarray(every_value)]))
    quantized = torch.quantize_per_tensor(normalized + shift, scale, zero_point, torch.quint8)
    assert torch.equal(quantized.int_repr()[0, 0], torch.from_numpy(every_value))


# ------------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_matches_the_fp32_eager_model(tiny_fer, mode):
    model, processor = tiny_fer
    if mode == "bf16" and not bf16_supported():
        pytest.skip("this CPU has no native bf16")
    faces = random_faces(40) + random_faces(3, (70, 64), "RGB", seed=1)
    runner = InferenceRunner(model, processor, mode)
    assert runner.mode == mode
    probabilities = runner(faces)
    expected = fp32_eager(model, processor, faces)
    assert probabilities.shape == (43, 7) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.abs(probabilities - expected).max() <= RANDOM_MODEL_TOLERANCE[mode]
    assert runner([]).shape == (0, 7)
    assert np.allclose(runner(faces[:1]), probabilities[:1], atol=1e-5)  # a batch of one, as the demo sends


def test_auto_picks_the_fastest_mode_this_cpu_has(tiny_fer, monkeypatch):
    model, processor = tiny_fer
    monkeypatch.delenv("FER_HF_RUNTIME", raising=False)
    assert InferenceRunner(model, processor).mode == default_mode(model)
    if inference._int8_engine() is not None:  # x86-64: PyTorch's default quantized engine there
        assert default_mode(model) == "int8"
    monkeypatch.setattr(inference, "_int8_engine", lambda: None)  # e.g. ARM
    assert InferenceRunner(model, processor).mode == ("bf16" if bf16_supported() else "fp32")
    monkeypatch.setattr(inference, "bf16_supported", lambda: False)
    assert InferenceRunner(model, processor).mode == "fp32"
    monkeypatch.setenv("FER_HF_RUNTIME", "eager")
    assert InferenceRunner(model, processor).mode == "eager"
    monkeypatch.setenv("FER_HF_RUNTIME", "fast")
    with pytest.raises(ValueError, match="mode must be one of"):
        InferenceRunner(model, processor)


def test_a_mode_that_fails_to_build_falls_back(tiny_fer, monkeypatch, caplog):
    model, processor = tiny_fer

    def broken(*args, **kwargs):
        raise RuntimeError("no quantized kernels in this torch")

    monkeypatch.setattr(inference, "Int8FerCNN", broken)
    runner = InferenceRunner(model, processor, "int8")
    assert runner.mode in ("bf16", "fp32") and "no quantized kernels" in caplog.text
    assert np.abs(runner(random_faces(5)) - fp32_eager(model, processor, random_faces(5))).max() < 0.02


def test_the_callers_model_is_left_as_it_was(tiny_fer):
    model, processor = tiny_fer
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for mode in MODES:
        InferenceRunner(model, processor, mode)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.is_contiguous() for p in model.parameters())  # not turned channels_last


def test_a_vit_runs_as_it_is():
    """Any other transformers classifier (here a tiny ViT, as from the Hub) runs eagerly, whatever is asked."""
    torch.manual_seed(0)
    labels = ["happy", "sad"]
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=2, id2label=dict(enumerate(labels)),
                       label2id={label: i for i, label in enumerate(labels)})
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    faces = random_faces(6, (40, 40), "RGB")
    with torch.inference_mode():
        expected = model(**processor(faces, return_tensors="pt")).logits.softmax(-1).numpy()
    for mode in ("auto", "int8", "bf16", "fp32"):
        runner = InferenceRunner(model, processor, mode)
        assert runner.mode == "eager" and runner.labels == labels
        np.testing.assert_allclose(runner(faces), expected, atol=1e-6)


def test_multi_label_models_get_sigmoids(tiny_fer):
    _, processor = tiny_fer
    config = FerConfig(hidden_sizes=[4, 8], depths=[1, 1], problem_type="multi_label_classification")
    model = FerCNNForImageClassification(config)
    probabilities = InferenceRunner(model, processor, "fp32")(random_faces(4))
    with torch.inference_mode():
        logits = model.eval()(pixel_values=processor(random_faces(4), return_tensors="pt")["pixel_values"]).logits
    np.testing.assert_allclose(probabilities, logits.sigmoid().numpy(), atol=1e-5)


def test_the_recognizer_classifies_through_the_runtime(tiny_fer):
    model, processor = tiny_fer
    recognizer = FaceExpressionRecognizer(model, processor, detector=FaceDetector(), batch_size=16, runtime="int8",
                                          flip_tta=False)  # on: tests/test_faces.py
    assert recognizer.runtime.mode == "int8"
    faces = random_faces(40)
    np.testing.assert_array_equal(recognizer.classify(faces), recognizer.runtime(faces[:16]).tolist()
                                  + recognizer.runtime(faces[16:32]).tolist() + recognizer.runtime(faces[32:]).tolist())


# ------------------------------------------------------------------------------- ONNX Runtime


def test_onnx_modes_use_the_folders_files_made_from_these_weights(tiny_fer, tmp_path, caplog):
    from fer_hf.export import ONNX_INT8_FILE, export_model

    model, processor = tiny_fer
    export_model(model, processor, tmp_path, int8=True)
    saved = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    faces = random_faces(8)
    from_file = InferenceRunner(saved, processor, "onnx-int8")
    assert from_file.mode == "onnx-int8" and "exporting the model again" not in caplog.text
    in_memory = InferenceRunner(model, processor, "onnx-int8")  # no folder: exported and quantized here
    np.testing.assert_array_equal(from_file(faces), in_memory(faces))
    # The same file beside other weights (a folder trained again after its export) is not used.
    with torch.no_grad():
        saved.classifier.bias += 1
    retrained = InferenceRunner(saved, processor, "onnx-int8")
    assert f"{tmp_path / ONNX_INT8_FILE} was made from other weights" in caplog.text
    assert np.abs(retrained(faces) - fp32_eager(saved, processor, faces)).max() <= RANDOM_MODEL_TOLERANCE["onnx-int8"]


@pytest.mark.parametrize("mode", ["onnx-int8", "onnx-fp32"])
def test_onnx_one_face_and_batches_agree(tiny_fer, mode, monkeypatch):
    """One face and mirror pairs run on a one-thread session, batches on one with torch's threads."""
    model, processor = tiny_fer
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    runner = InferenceRunner(model, processor, mode)
    faces = random_faces(12)
    batch = runner(faces)
    singles = np.concatenate([runner(faces[i : i + 1]) for i in range(len(faces))])
    np.testing.assert_allclose(singles, batch, atol=1e-6)


def test_onnx_falls_back_without_onnxruntime(tiny_fer, monkeypatch, caplog):
    model, processor = tiny_fer
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if it were not installed
    runner = InferenceRunner(model, processor, "onnx-int8")
    assert runner.mode == default_mode_without_onnx(model) and "'onnx-int8' is not available" in caplog.text


def default_mode_without_onnx(model):
    return "int8" if inference._int8_engine() is not None else ("bf16" if bf16_supported() else "fp32")


# ------------------------------------------------------------------------------- architecture option


def test_downsample_in_first_stage():
    torch.manual_seed(0)
    plain = FerCNNForImageClassification(FerConfig.from_variant("base"))
    torch.manual_seed(0)
    strided = FerCNNForImageClassification(FerConfig.from_variant("base-s2"))
    assert FerConfig().downsample_in_first_stage is False  # saved models without the key load as before
    # Same parameters, initialised identically; only the first convolution's stride differs.
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), strided.state_dict().values()))
    assert FER_CNN_VARIANTS["base-s2"]["hidden_sizes"] == FER_CNN_VARIANTS["base"]["hidden_sizes"]
    x = torch.zeros(1, 1, 48, 48)
    assert plain.fer_cnn(x).last_hidden_state.shape[-1] == 3 and strided.fer_cnn(x).last_hidden_state.shape[-1] == 1
    with pytest.raises(Exception, match="stride-2 first convolution"):
        FerConfig(image_size=16, hidden_sizes=[4, 4, 4, 4], depths=[1, 1, 1, 1], downsample_in_first_stage=True)


def test_int8_follows_the_first_stride(tmp_path):
    torch.manual_seed(0)
    config = FerConfig(hidden_sizes=[8, 16], depths=[2, 1], downsample_in_first_stage=True)
    FerCNNForImageClassification(config).save_pretrained(tmp_path)
    model = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert model.config.downsample_in_first_stage is True
    faces, processor = random_faces(20), FerImageProcessor()
    int8 = Int8FerCNN(model, FerPixels.from_processor(processor).input_scale())
    assert int8.stages[0][0].stride == (2, 2)
    assert np.abs(InferenceRunner(model, processor, "int8")(faces) - fp32_eager(model, processor, faces)).max() < 0.03


@pytest.mark.parametrize("vnni, largest", [(True, 127), (False, 63)])
def test_int8_weights_keep_to_7_bits_without_vnni(monkeypatch, vnni, largest):
    # Without VNNI the x86 kernels add pairs of uint8 x int8 products in int16: 8-bit weights overflow it.
    monkeypatch.setattr(inference, "_has_vnni", lambda: vnni)
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[8, 16], depths=[1, 1])).eval()
    int8 = Int8FerCNN(model, FerPixels.from_processor(FerImageProcessor()).input_scale())
    for unit in (module for stage in int8.stages for module in stage if hasattr(module, "weight")):
        weights = unit.weight().int_repr()
        assert weights.abs().max() == largest  # each channel's largest weight takes the top level
