"""The FER CNN as a transformers model: a tiny config and one shared tester, as transformers' own tests do."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, pipeline

from fer_hf import FER2013_LABELS, FER_CNN_VARIANTS, FerCNNForImageClassification, FerConfig, FerImageProcessor

from tests.conftest import run_python


class FerCNNModelTester:
    """Builds a tiny config and inputs; every test below starts from it."""

    def __init__(self, batch_size=3, image_size=16):
        self.batch_size, self.image_size, self.num_labels = batch_size, image_size, 7

    def get_config(self, **overrides) -> FerConfig:
        kwargs = dict(image_size=self.image_size, hidden_sizes=[4, 8], depths=[1, 2])  # FER-2013's 7 labels
        kwargs.update(overrides)
        return FerConfig(**kwargs)

    def prepare_inputs(self):
        torch.manual_seed(0)
        pixel_values = torch.randn(self.batch_size, 1, self.image_size, self.image_size)
        labels = torch.randint(0, self.num_labels, (self.batch_size,))
        return pixel_values, labels


@pytest.fixture
def tester():
    return FerCNNModelTester()


def test_forward_returns_logits_and_loss(tester):
    pixel_values, labels = tester.prepare_inputs()
    model = FerCNNForImageClassification(tester.get_config()).eval()
    without = model(pixel_values)
    assert without.loss is None and without.logits.shape == (3, 7)
    output = model(pixel_values, labels=labels)
    assert torch.allclose(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_soft_labels_give_the_soft_cross_entropy(tester):
    # FER+ vote distributions train the same head: targets are per-class probabilities.
    pixel_values, _ = tester.prepare_inputs()
    model = FerCNNForImageClassification(tester.get_config()).eval()
    targets = torch.softmax(torch.randn(3, 7), dim=-1)
    output = model(pixel_values, labels=targets)
    expected = -(targets * torch.log_softmax(output.logits, dim=-1)).sum(-1).mean()
    assert torch.allclose(output.loss, expected, atol=1e-6)


def test_hidden_states_and_tuple_output(tester):
    pixel_values, labels = tester.prepare_inputs()
    model = FerCNNForImageClassification(tester.get_config()).eval()
    output = model(pixel_values, output_hidden_states=True)
    assert [h.shape[1:] for h in output.hidden_states] == [(4, 8, 8), (8, 4, 4)]
    loss, logits = model(pixel_values, labels=labels, return_dict=False)[:2]
    assert torch.equal(logits, output.logits) and loss.ndim == 0


def test_save_and_reload_give_identical_logits(tester, tmp_path):
    pixel_values, _ = tester.prepare_inputs()
    model = FerCNNForImageClassification(tester.get_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is FerCNNForImageClassification
    assert torch.equal(model(pixel_values).logits, reloaded(pixel_values).logits)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "fer_cnn" and config["auto_map"]["AutoModelForImageClassification"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_sizes": [4, 8], "depths": [1]}, "equal length"),
        ({"hidden_sizes": [4, 0], "depths": [1, 1]}, "must be positive"),
        ({"num_channels": 2}, "num_channels must be 1"),
        ({"image_size": 3}, "too small for 2 stages"),
        ({"classifier_dropout_prob": 1.5}, r"classifier_dropout_prob must be in \[0, 1\)"),
    ],
)
def test_config_validates_itself(tester, overrides, message):
    with pytest.raises(Exception, match=message):
        tester.get_config(**overrides)


def test_variants_and_default_labels():
    config = FerConfig()
    assert [config.id2label[i] for i in range(7)] == FER2013_LABELS
    sizes = {name: sum(p.numel() for p in FerCNNForImageClassification(FerConfig.from_variant(name)).parameters())
             for name in FER_CNN_VARIANTS}
    assert sizes["tiny"] < sizes["small"] < sizes["base"] < sizes["large"] <= 5_000_000
    with pytest.raises(ValueError, match="Unknown FER CNN variant 'huge'"):
        FerConfig.from_variant("huge")
    two = FerConfig.from_variant("tiny", id2label={0: "happy", 1: "sad"}, label2id={"happy": 0, "sad": 1})
    assert two.num_labels == 2


def test_auto_classes_and_pipeline_in_process(tester, tmp_path):
    model = FerCNNForImageClassification(tester.get_config(image_size=48, hidden_sizes=[4, 8, 8], depths=[1, 1, 1]))
    model.save_pretrained(tmp_path)
    FerImageProcessor().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), FerConfig)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), FerImageProcessor)
    from PIL import Image

    # trust_remote_code=False: with fer_hf imported the registered classes load, and transformers
    # 5.23's pipeline would otherwise ask about the folder's code (through its AutoVideoProcessor probe).
    classifier = pipeline("image-classification", model=str(tmp_path), trust_remote_code=False)
    predictions = classifier(Image.new("RGB", (64, 64)), top_k=7)
    assert sorted(p["label"] for p in predictions) == sorted(FER2013_LABELS)
    assert abs(sum(p["score"] for p in predictions) - 1) < 1e-5


REMOTE_CODE_SNIPPET = """
import importlib.util, json, sys
import numpy as np, torch
from PIL import Image
assert importlib.util.find_spec("fer_hf") is None, "fer_hf must not be importable here"
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
folder = sys.argv[1]
images = [Image.open(p) for p in sys.argv[2:]]
pipe = pipeline("image-classification", model=folder, trust_remote_code=True)
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    logits = model(**processor(images, return_tensors="pt")).logits
print(json.dumps({"classes": [type(model).__name__, type(processor).__name__],
                  "logits": logits.tolist(), "pipeline": [pipe(im, top_k=1)[0]["label"] for im in images]}))
"""


def test_trust_remote_code_in_a_process_without_fer_hf(tester, tmp_path):
    from PIL import Image

    folder = tmp_path / "model"
    model = FerCNNForImageClassification(tester.get_config(image_size=48, hidden_sizes=[4, 8, 8], depths=[1, 1, 1])).eval()
    model.save_pretrained(folder)
    processor = FerImageProcessor()
    processor.save_pretrained(folder)
    images = []
    for i, mode in enumerate(["RGB", "L", "RGBA"]):
        image = Image.effect_noise((60 + 10 * i, 50), 40 + i).convert(mode)
        image.save(tmp_path / f"{i}.png")
        images.append(Image.open(tmp_path / f"{i}.png"))
    script = tmp_path / "load.py"
    script.write_text(REMOTE_CODE_SNIPPET)
    # cwd outside the repo and no PYTHONPATH: the only FER code available is the folder's copy.
    result = run_python([script, folder, *(tmp_path / f"{i}.png" for i in range(3))], cwd=tmp_path, env={"PYTHONPATH": ""})
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["classes"] == ["FerCNNForImageClassification", "FerImageProcessor"]
    with torch.no_grad():
        local = model(**processor(images, return_tensors="pt")).logits
    assert torch.allclose(torch.tensor(remote["logits"]), local, atol=1e-5)
    assert remote["pipeline"] == [model.config.id2label[i] for i in local.argmax(-1).tolist()]
