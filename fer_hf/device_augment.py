"""Faces held on the training device and augmented there, batch by batch, in torch.

`train.py --device_augment true` decodes each split's images once into one uint8 tensor on the training
device (28,709 FER-2013 faces are 66 MB). The DataLoader then hands out row numbers (`DeviceRows`), and
`FerTrainer` gathers each batch from the tensor and augments it on the device (`augment_faces`): a GPU
is no longer fed by a Python loop over PIL images.

The augmentation is `fer_hf.data.augment`'s, vectorised, with the same `FaceAugmentation` ranges: a
random crop resized back (one affine warp that also flips and rotates), brightness and contrast, and
optionally random erasing. Its random
numbers come from the device's global generator, which `--seed` seeds and Trainer checkpoints: the
same seed gives the same batches, and a resumed run goes on as the uninterrupted one would.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from .data import FaceAugmentation  # the ranges, shared with the PIL path


def draw_parameters(batch: int, augmentation: FaceAugmentation, device: torch.device | str,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Each face's random augmentation, drawn on `device` (one `torch.rand` call, so one generator step).

    Returns:
        Per-face tensors of length `batch`: `scale`, `shift_x`, `shift_y` (the crop's centre, in the
        [-1, 1] coordinates of `affine_grid`), `flip` (bool), `angle` (degrees, counter-clockwise),
        `brightness`, `contrast`, `erase` (bool) and the box's `erase_area`, `erase_ratio`, `erase_x`,
        `erase_y` (its centre, as a share of the width and height).
    """
    u = torch.rand(12, batch, device=device, generator=generator)
    low, high = augmentation.crop_scale
    scale = low + (high - low) * u[0]
    area_low, area_high = augmentation.erasing_area
    return {
        "scale": scale,
        "shift_x": (1 - scale) * (2 * u[1] - 1),  # the crop stays inside the face
        "shift_y": (1 - scale) * (2 * u[2] - 1),
        "flip": u[3] < augmentation.flip,
        "angle": augmentation.rotation * (2 * u[4] - 1),
        "brightness": 1 + augmentation.brightness * (2 * u[5] - 1),
        "contrast": 1 + augmentation.contrast * (2 * u[6] - 1),
        "erase": u[7] < augmentation.erasing,
        "erase_area": area_low + (area_high - area_low) * u[8],
        "erase_ratio": torch.exp(math.log(3) * (2 * u[9] - 1)),  # log-uniform in [1/3, 3], as torchvision draws it
        "erase_x": u[10],
        "erase_y": u[11],
    }


def augment_faces(pixels: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
    """Crops, flips, rotates and changes the brightness and contrast of a batch, as `fer_hf.data.augment` does.

    The crop, flip and rotation are one affine warp per face (`affine_grid` and bilinear `grid_sample`);
    the crop box maps onto the whole output, pixel edges to pixel edges, as PIL's resize of a box does.

    Args:
        pixels: `(batch, channels, height, width)` in [0, 1] (float), on any device.
        parameters: From `draw_parameters`.

    Returns:
        The augmented batch, in [0, 1], same shape, dtype and device.
    """
    scale, angle = parameters["scale"], torch.deg2rad(parameters["angle"])
    cos, sin = torch.cos(angle), torch.sin(angle)
    flip = torch.where(parameters["flip"], -1.0, 1.0).to(pixels.dtype)
    # Output coordinates -> input: rotate (PIL's counter-clockwise, y pointing down), mirror x, then crop.
    theta = torch.stack([
        torch.stack([scale * flip * cos, -scale * flip * sin, parameters["shift_x"]], dim=-1),
        torch.stack([scale * sin, scale * cos, parameters["shift_y"]], dim=-1),
    ], dim=1).to(pixels.dtype)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    # As PIL: a crop's edge pixels are repeated (not blended with black), and what a rotation brings in from
    # outside the face is black.
    warped = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    warped = warped.masked_fill((grid.abs() > 1).any(-1).unsqueeze(1), 0)
    shape = (-1, 1, 1, 1)
    warped = warped * parameters["brightness"].to(pixels.dtype).view(shape)
    mean = warped.mean(dim=(1, 2, 3), keepdim=True)  # PIL's Contrast blends with the image's mean gray
    warped = mean + parameters["contrast"].to(pixels.dtype).view(shape) * (warped - mean)
    return warped.clamp(0, 1)


def erase_boxes(pixel_values: torch.Tensor, parameters: dict[str, torch.Tensor], value: float = 0.0) -> torch.Tensor:
    """Random erasing: sets a box of each chosen face (`parameters["erase"]`) to `value`; the others are kept.

    Applied to normalised pixels, where 0 is the dataset's mean gray (torchvision's default).
    """
    height, width = pixel_values.shape[-2:]
    area = parameters["erase_area"] * height * width
    box_h = (area / parameters["erase_ratio"]).sqrt().round().clamp(1, height)
    box_w = (area * parameters["erase_ratio"]).sqrt().round().clamp(1, width)
    top = ((height - box_h) * parameters["erase_y"]).floor()
    left = ((width - box_w) * parameters["erase_x"]).floor()
    rows = torch.arange(height, device=pixel_values.device).view(1, -1, 1)
    cols = torch.arange(width, device=pixel_values.device).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1)))
    inside = inside & parameters["erase"].view(-1, 1, 1)
    return pixel_values.masked_fill(inside.unsqueeze(1), value)


class DeviceRows(torch.utils.data.Dataset):
    """The rows of one split held in `DeviceFaces`: item i is `{"row": row number, "labels": target}`.

    What the DataLoader hands out under `--device_augment`; `fer_hf.training.collate` stacks the row
    numbers into `rows`, which `FerTrainer` turns into pixels on the device.
    """

    def __init__(self, start: int, targets: torch.Tensor):
        self.start, self.targets = start, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict:
        return {"row": self.start + index, "labels": self.targets[index]}


class DeviceFaces:
    """Faces decoded once into one uint8 tensor on `device`; `batch(rows)` gathers, augments and normalises.

    Args:
        image_processor: The model's processor: it resizes the faces once (to its `size`) and its
            rescale factor, mean and std normalise each batch on the device as it would.
        device: Where the faces live and are augmented (the training device).
        augmentation: The training augmentation; None trains on the faces as they are.
        grayscale: Decode as "L" (our CNN) or "RGB" (Hub models).
    """

    def __init__(self, image_processor, device: torch.device | str, augmentation: FaceAugmentation | None = None,
                 *, grayscale: bool = True):
        self.image_processor, self.device, self.grayscale = image_processor, torch.device(device), grayscale
        self.augmentation = augmentation
        self.pixels = None  # (rows, channels, height, width) uint8, every held split one after the other
        channels = 1 if grayscale else 3
        normalize = getattr(image_processor, "do_normalize", True)

        def per_channel(values) -> torch.Tensor:
            values = np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,)).copy()
            return torch.tensor(values, device=self.device).view(1, -1, 1, 1)

        # The model's input is (pixel * rescale - mean) / std, with pixels as stored (0..255).
        self.mean = per_channel(image_processor.image_mean if normalize else 0.0)
        self.std = per_channel(image_processor.image_std if normalize else 1.0)
        self.rescale = image_processor.rescale_factor if getattr(image_processor, "do_rescale", True) else 1.0

    def hold(self, dataset: Dataset, targets: torch.Tensor | np.ndarray | list, *,
             batch_size: int = 1024) -> DeviceRows:
        """Decodes `dataset`'s images (an `image` column) onto the device; returns its rows with `targets`."""
        rows = dataset.with_format(None).select_columns(["image"])
        mode = "L" if self.grayscale else "RGB"
        parts = []
        for start in range(0, len(rows), batch_size):
            images = [image.convert(mode) for image in rows[start: start + batch_size]["image"]]
            # The processor's own resize, without its rescale and normalisation: uint8 pixels, as stored.
            resized = self.image_processor(images, do_rescale=False, do_normalize=False, return_tensors="pt")
            parts.append(resized["pixel_values"].round().clamp(0, 255).to(torch.uint8))
        held = torch.cat(parts).to(self.device)
        start = 0 if self.pixels is None else len(self.pixels)
        self.pixels = held if self.pixels is None else torch.cat([self.pixels, held])
        targets = torch.as_tensor(np.asarray(targets))
        return DeviceRows(start, targets.float() if targets.is_floating_point() else targets)  # float32, as collate

    def batch(self, rows: torch.Tensor, *, augment: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """The model inputs of `rows` (row numbers from `DeviceRows`): float32 on the device, augmented if asked."""
        pixels = self.pixels[rows.to(self.device)].float() / 255.0
        parameters = None
        if augment and self.augmentation is not None:
            parameters = draw_parameters(len(rows), self.augmentation, self.device, generator)
            pixels = augment_faces(pixels, parameters)
        pixel_values = (pixels * (255.0 * self.rescale) - self.mean) / self.std  # pixels are in [0, 1] here
        if parameters is not None and self.augmentation.erasing > 0:
            pixel_values = erase_boxes(pixel_values, parameters)
        return pixel_values


__all__ = ["DeviceFaces", "DeviceRows", "FaceAugmentation", "augment_faces", "draw_parameters", "erase_boxes"]
