"""The pieces of a FER CNN's fast graphs that the int8 runtime (fer_hf.inference) and the ONNX export
(fer_hf.export) share: the processor's steps for PIL faces, the activation ranges taken from batch norm, and
the tensor-in, tensor-out wrapper that tracing needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .model.image_processing_fer import fer_pixel_values

# int8 activation range of each conv+BN+ReLU unit: the largest `beta + K * |gamma|` of its channels,
# i.e. K standard deviations above each channel's mean pre-activation on the training data, as the
# batch norm recorded it, so no calibration images are needed. K = 6 keeps fp32's top class for the
# most training faces of the bundled models: larger K lose small activations' resolution, K = 5 clips
# large ones (`python benchmarks/sweep_int8_range.py`: benchmarks/results/int8_range.md).
ACTIVATION_RANGE_SIGMAS = 6.0


def is_fer_cnn(model: Any) -> bool:
    """A FER CNN (ours or its remote-code copy) with the layer layout the int8 and traced modes know."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) == "fer_cnn" and hasattr(model, "fer_cnn")


class FerPixels:
    """The FER image processor's steps for PIL faces, without its generic per-call machinery.

    Gives exactly the processor's `pixel_values` (tests/test_inference.py checks it): gray via Pillow's
    "L" conversion, then the processor's own `fer_pixel_values` (resize, rescale, normalise). For one
    48x48 face this takes a fraction of the processor's generic call.
    """

    def __init__(self, height: int, width: int, resample: int, rescale_factor: float, mean: float, std: float):
        self.height, self.width, self.resample = height, width, resample
        self.rescale_factor, self.mean, self.std = rescale_factor, mean, std

    @classmethod
    def from_processor(cls, processor: Any) -> FerPixels | None:
        """The steps of a FerImageProcessor with the usual flags; None for any other processor."""
        if type(processor).__name__ != "FerImageProcessor":  # also the copy loaded as remote code
            return None
        mean, std = list(np.ravel(processor.image_mean)), list(np.ravel(processor.image_std))
        usual_steps = processor.do_resize and processor.do_rescale and processor.do_normalize
        if not usual_steps or len(mean) != 1 or len(std) != 1:
            return None
        size = processor.size
        height, width = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
        resample, rescale = int(processor.resample), float(processor.rescale_factor)
        return cls(height, width, resample, rescale, float(mean[0]), float(std[0]))

    def __call__(self, faces: Sequence[Any]) -> np.ndarray | None:
        """The model input (N x 1 x H x W float32) of the faces, or None if one is not a plain PIL "L" or "RGB" image."""
        arrays = []
        for face in faces:
            if not isinstance(face, Image.Image) or face.mode not in ("L", "RGB") or "transparency" in face.info:
                return None  # other modes (alpha, 16-bit, ...) have their own rules in the processor
            arrays.append(np.asarray(face.convert("L") if face.mode == "RGB" else face)[None])
        return fer_pixel_values(arrays, (self.height, self.width), self.resample, do_resize=True, do_rescale=True,
                                rescale_factor=self.rescale_factor, do_normalize=True, image_mean=[self.mean],
                                image_std=[self.std])

    def input_scale(self) -> tuple[float, int, float]:
        """(scale, zero point, shift) with which a normalised pixel x quantizes back to its uint8 value.

        x = p * r / std - mean / std, so (x + shift) / scale + zero_point = p exactly for scale = r / std,
        zero_point = round(mean / r) and shift = (mean / r - zero_point) * scale.
        """
        scale = self.rescale_factor / self.std
        zero_point = int(np.clip(round(self.mean / self.rescale_factor), 0, 255))
        return scale, zero_point, (self.mean / self.rescale_factor - zero_point) * scale


def activation_range(norm: nn.BatchNorm2d, sigmas: float = ACTIVATION_RANGE_SIGMAS) -> float:
    """The top of a conv + batch norm + ReLU unit's output range: its channels' largest beta + sigmas * |gamma|."""
    return float((norm.bias + sigmas * norm.weight.abs()).detach().max().clamp(min=1e-3))


class LogitsOnly(nn.Module):
    """The classifier as a tensor-in, tensor-out module, which is what TorchScript tracing needs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=False)[0]


__all__ = ["ACTIVATION_RANGE_SIGMAS", "FerPixels", "LogitsOnly", "activation_range", "is_fer_cnn"]
