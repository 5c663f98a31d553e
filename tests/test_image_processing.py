"""FerImageProcessor: any PIL mode, NumPy dtype or torch tensor in, a normalised 1x48x48 tensor out."""

import numpy as np
import pytest
import torch
from PIL import Image

from fer_hf import FerImageProcessor
from fer_hf.model.image_processing_fer import to_grayscale_uint8


@pytest.fixture(scope="module")
def processor():
    return FerImageProcessor()


def _rgb(width=64, height=40):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "CMYK", "1", "YCbCr"])
def test_every_pil_mode_gives_a_normalised_48x48_tensor(processor, mode):
    image = _rgb().convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray(
        (np.asarray(_rgb().convert("L"), dtype=np.float32) * {"I;16": 257, "I": 257, "F": 1 / 255}[mode]).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        )
    )
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 1, 48, 48) and pixel_values.dtype == torch.float32
    assert torch.isfinite(pixel_values).all()
    assert -2.0 - 1e-6 <= pixel_values.min() and pixel_values.max() <= 2.0 + 1e-6  # (0..1 - 0.5) / 0.25


def test_wide_modes_are_scaled_not_clipped():
    gray = np.asarray(_rgb().convert("L"))
    as_16_bit = Image.fromarray(gray.astype(np.uint16) * 257)
    assert np.abs(to_grayscale_uint8(as_16_bit).astype(int) - gray).max() <= 1
    as_float = Image.fromarray(gray.astype(np.float32) / 255)
    assert np.abs(to_grayscale_uint8(as_float).astype(int) - gray).max() <= 1


def test_numpy_and_torch_inputs_match_the_pil_image(processor):
    image = _rgb()
    expected = processor(image, return_tensors="pt")["pixel_values"]
    array = np.asarray(image)
    for same in (
        array,  # HxWx3 uint8
        np.moveaxis(array, -1, 0),  # 3xHxW
        array.astype(np.float32) / 255,  # floats in 0..1
        array.astype(np.uint16) * 257,  # 16-bit
        torch.from_numpy(np.moveaxis(array, -1, 0).copy()),  # a torch CHW tensor
    ):
        assert torch.allclose(processor(same, return_tensors="pt")["pixel_values"], expected, atol=0.02), type(same)


def test_grayscale_arrays_and_batches(processor):
    gray = np.asarray(_rgb().convert("L"))
    batch = processor([gray, gray[..., None], gray > 128, _rgb(100, 100)], return_tensors="pt")["pixel_values"]
    assert batch.shape == (4, 1, 48, 48)
    assert torch.equal(batch[0], batch[1])


def test_transparent_pixels_are_composited_on_white():
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert (to_grayscale_uint8(clear) == 255).all()


@pytest.mark.parametrize("bad", [np.zeros((5, 4, 2)), np.zeros((0, 4)), np.zeros((2, 3, 4, 5, 6)), np.array([["a"]])])
def test_impossible_arrays_raise_a_clear_error(processor, bad):
    with pytest.raises((ValueError, TypeError)):
        processor(bad, return_tensors="pt")


def test_config_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = FerImageProcessor.from_pretrained(tmp_path)
    assert reloaded.size == processor.size and list(reloaded.image_mean) == [0.5]
    image = _rgb()
    assert torch.equal(reloaded(image, return_tensors="pt")["pixel_values"], processor(image, return_tensors="pt")["pixel_values"])
