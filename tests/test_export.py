"""fer_hf.export and `python -m fer_hf export`: ONNX files that give PyTorch's answers on real faces."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification
from transformers import ViTImageProcessorPil

from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
from fer_hf.__main__ import main
from fer_hf.export import (ONNX_FILE, ONNX_INT8_FILE, PARITY_TOLERANCE, export_fp32, export_model,
                           file_weights_digest, max_logit_difference, onnx_session, quantize_int8, weights_digest)
from fer_hf.hub import load_classifier

from tests import freshpython
from tests.conftest import FER_FIXTURE_DIR, ROOT
from tests.hub_server import LoopbackHub
from tests.hubtools import hub_env

BUNDLED = ["fer2013-cnn", "fer2013-cnn-fast"]
TOKEN = "hf_exportTestToken0123"


def real_faces(model, processor, files=("train.parquet", "publictest.parquet"), folder=FER_FIXTURE_DIR):
    """The model input and class index of the FER-2013 faces of the model's classes in these files."""
    from datasets import concatenate_datasets, load_dataset

    data = concatenate_datasets([load_dataset("parquet", data_files=str(folder / f), split="train") for f in files])
    fer_names = data.features["label"].names
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    data = data.filter(lambda label: fer_names[label] in names, input_columns="label")
    pixels = np.concatenate([processor(list(data[i : i + 512]["image"]), return_tensors="np")["pixel_values"]
                             for i in range(0, len(data), 512)])
    return torch.from_numpy(pixels), np.array([names.index(fer_names[label]) for label in data["label"]])


def onnx_logits(path: Path, pixel_values: torch.Tensor) -> np.ndarray:
    return onnx_session(path, threads=1).run(["logits"], {"pixel_values": pixel_values.numpy()})[0]


def tiny_vit():
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=2, id2label={0: "happy", 1: "sad"},
                       label2id={"happy": 0, "sad": 1})
    return ViTForImageClassification(config).eval(), ViTImageProcessorPil(size={"height": 32, "width": 32})


# ------------------------------------------------------------------------------- the bundled files


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_fp32_onnx_equals_pytorch_on_real_faces(name):
    """Measured: max |logit difference| 2.4e-6 / 1.8e-6 on the fixture's faces."""
    folder = ROOT / "models" / name
    model, processor = load_classifier(folder)
    pixel_values, _ = real_faces(model, processor)
    with torch.inference_mode():
        expected = model(pixel_values=pixel_values).logits.numpy()
    for path in (folder / ONNX_FILE, folder / ONNX_INT8_FILE):
        assert file_weights_digest(path) == weights_digest(model), f"{path} was made from other weights: export again"
    assert np.abs(onnx_logits(folder / ONNX_FILE, pixel_values) - expected).max() <= PARITY_TOLERANCE
    one = onnx_logits(folder / ONNX_FILE, pixel_values[:1])  # the batch axis is dynamic: one face as well
    assert np.abs(one - expected[:1]).max() <= PARITY_TOLERANCE


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_int8_onnx_keeps_the_top_class_on_the_fixture_faces(name):
    """The fixture's 168 faces: fp32's top class kept for 166 / 167 of them.

    Its int8 file is exactly what `quantize_int8` makes from the weights (no calibration data enters it).
    """
    folder = ROOT / "models" / name
    model, processor = load_classifier(folder)
    pixel_values, _ = real_faces(model, processor)
    fp32, int8 = onnx_logits(folder / ONNX_FILE, pixel_values), onnx_logits(folder / ONNX_INT8_FILE, pixel_values)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.97
    remade = quantize_int8(model, export_fp32(model), processor)
    np.testing.assert_array_equal(onnx_logits(remade.SerializeToString(), pixel_values), int8)


# ------------------------------------------------------------------------------- exporting


def test_export_command_writes_a_loadable_folder(tmp_path, capsys):
    output = tmp_path / "exported"
    assert main(["export", str(ROOT / "models" / "fer2013-cnn-fast"), str(output), "--int8"]) == 0
    assert f"Wrote {output / ONNX_INT8_FILE}" in capsys.readouterr().out
    model, processor = load_classifier(output)  # a complete model folder: weights, config, code, processor
    assert json.loads((output / "config.json").read_text())["auto_map"]
    assert (output / "pipeline_fer.py").is_file()  # the config's custom_pipelines entry names it
    session = onnx_session(output / ONNX_FILE, threads=1)
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("pixel_values", [1, 48, 48])]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    pixel_values, _ = real_faces(model, processor, ("publictest.parquet",))
    with torch.inference_mode():
        expected = model(pixel_values=pixel_values).logits.numpy()
    assert np.abs(onnx_logits(output / ONNX_FILE, pixel_values) - expected).max() <= PARITY_TOLERANCE


def test_a_model_in_training_mode_exports_as_in_eval_mode():
    """Dropout and batch-norm batch statistics move logits a lot (fer2013-cnn in training mode: by up to
    1.5 on the fixture's PublicTest faces): the export and its check always use eval mode."""
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[8, 16], depths=[1, 1])).train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    proto = export_fp32(model)
    assert model.training  # the caller's model is left as it was
    pixel_values, _ = real_faces(model, FerImageProcessor(), ("publictest.parquet",))
    assert max_logit_difference(model.eval(), proto, pixel_values) <= PARITY_TOLERANCE


def test_a_vit_exports_through_the_generic_path_but_not_to_int8(tmp_path, capsys):
    model, processor = tiny_vit()
    written = export_model(model, processor, tmp_path, int8=False)
    assert written == [tmp_path / ONNX_FILE]
    pixel_values = processor(random_images(6), return_tensors="pt")["pixel_values"]
    assert max_logit_difference(model, tmp_path / ONNX_FILE, pixel_values) <= PARITY_TOLERANCE
    with pytest.raises(ValueError, match="int8 export needs a FER CNN.*ViTForImageClassification can be exported in fp32 only"):
        quantize_int8(model, export_fp32(model), processor)
    assert main(["export", str(tmp_path), str(tmp_path / "again"), "--int8"]) == 1
    assert "error: cannot export" in capsys.readouterr().err


def test_a_missing_or_broken_model_gives_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert f"error: cannot load {tmp_path / 'nowhere'}" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert main(["export", str(broken), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert f"error: cannot load {broken}" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def random_images(count):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(count)]


# ------------------------------------------------------------------------------- pushing


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LoopbackHub(tmp_path_factory.mktemp("hub"), tokens={TOKEN: "alice"}, lfs_threshold=1024) as server:
        yield server


@pytest.mark.parametrize("flags, uploaded", [([], True), (["--no_onnx"], False)])
def test_push_uploads_the_onnx_files_unless_told_not_to(hub, tmp_path, flags, uploaded):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[8, 16], depths=[1, 1])).eval()
    export_model(model, FerImageProcessor(), folder, int8=True)
    repo = f"alice/fer-onnx{'-' if flags else ''}{'-'.join(flag.strip('-') for flag in flags)}"
    result = freshpython.run(["-m", "fer_hf", "push", folder, repo, *flags], cwd=ROOT, timeout=300,
                             env=hub_env(hub, tmp_path / "hf", token=TOKEN, disable_xet=True))
    assert result.returncode == 0, result.stderr
    assert hub.file_bytes(repo, "model.safetensors") == (folder / "model.safetensors").read_bytes()
    for name in (ONNX_FILE, ONNX_INT8_FILE):
        if uploaded:
            assert hub.file_bytes(repo, name) == (folder / name).read_bytes()
        else:
            with pytest.raises(KeyError):
                hub.file_bytes(repo, name)
