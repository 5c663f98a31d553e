"""Heat maps that show which pixels of a face its label came from (captum's Grad-CAM and Occlusion).

    from fer_hf.model.heatmaps import face_heatmaps, box_heatmap

    maps = face_heatmaps(model, pixel_values, targets=[3, 4])              # faces x 48 x 48, float32 in [0, 1]
    maps = face_heatmaps(model, pixel_values, [3, 4], method="grad-cam")   # about 15x faster, less faithful
    box_map = box_heatmap(maps[0], box, square)   # the face box's height x width in the photo's pixels

"occlusion", the default: captum's `Occlusion`, an 8x8 gray patch slid in steps of 4 pixels, how much each
position lowers the class's logit. "grad-cam": captum's `LayerGradCam` on the last feature map with at least MIN_SIDE x MIN_SIDE cells (12x12 in
fer2013-cnn: its last map, 6x6, gives blobs), upsampled bilinearly to the crop: far faster, but
on PublicTest its top pixels lower the class less than random ones on most faces, where Occlusion's do so on
over 75% (benchmarks/results/explain.md), so Occlusion is what `explain=True` gives. Warm (1) marks the pixels that raise the class's
logit most, cool (0) those that do not raise it.

captum hooks the modules it looks at. It works on a shell of the model here (its own module objects, the same
weight tensors), so nothing is ever registered on the caller's model: a demo serving several people from one
model mixes no requests and leaks no hooks. It needs the eager model (not a TorchScript or int8 runtime).

Every saved model carries this file for its face pipeline (pipeline_fer.py, `explain=True`): captum is imported
only where it is installed, and asking for a heat map without it says how to install it.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

# captum (and the matplotlib it imports) is loaded only when a map is made: over a second of every
# process's start-up otherwise, for a feature most runs never ask for.
HAS_CAPTUM = importlib.util.find_spec("captum") is not None

METHODS = ("occlusion", "grad-cam")
# What explain=True makes: the map that passed the deletion check (benchmarks/results/explain.md).
DEFAULT_METHOD = "occlusion"
# Grad-CAM looks at the last feature map whose sides have at least this many cells.
MIN_SIDE = 12
# Occlusion: the gray patch (0 is the mean pixel after normalisation) and its step, in crop pixels.
OCCLUSION_WINDOW = 8
OCCLUSION_STRIDE = 4
# Occluded copies per forward pass, all faces of a call together: a bound on the memory a big group photo takes.
OCCLUSION_BATCH = 256
# On a CPU a model sees at most this many rows per forward pass (here and in fer_hf.evaluation): the default CNN's
# activations for 256 faces spill out of the caches, and 64 at a time ran about twice as fast with the same
# logits, bit for bit (benchmarks/results/forward_rows.md). A GPU takes each batch whole.
CPU_FORWARD_ROWS = 64

# Where a square crop lies in the photo: its top-left corner (x, y), its side and its turn in degrees
# (face_detection.crop_square); None for a photo classified whole (its crop is the photo resized).
Square = tuple[float, float, float, float]


def explain_method(explain: bool | str) -> str | None:
    """The heat-map method that `explain` asks for: True -> DEFAULT_METHOD, a name in METHODS, False/None -> None.

    Raises:
        ValueError: an unknown method (the message lists METHODS).
        ImportError: captum is not installed.
    """
    if explain is None or explain is False:
        return None
    method = DEFAULT_METHOD if explain is True else explain
    if method not in METHODS:
        raise ValueError(f"explain must be True, False or one of {list(METHODS)}, got {explain!r}.")
    if not HAS_CAPTUM:
        raise ImportError("Heat maps need captum: pip install captum")
    return method


def target_index(labels: Sequence[str], target: str | None) -> int | None:
    """Where the class `target` is among the model's `labels`; None for None (the predicted class).

    Raises:
        ValueError: a target that is not one of the labels; the message lists them.
    """
    if target is None:
        return None
    labels = [str(label) for label in labels]
    if str(target) not in labels:
        raise ValueError(f"target {target!r} is not one of the model's labels {labels}.")
    return labels.index(str(target))


def face_heatmaps(model: nn.Module, pixel_values: torch.Tensor, targets: Sequence[int],
                  method: str = DEFAULT_METHOD, min_side: int = MIN_SIDE) -> np.ndarray:
    """Heat maps of face crops: faces x height x width (the crops' size), float32 in [0, 1].

    Args:
        model: An eager transformers image classifier (its forward takes `pixel_values`, gives `.logits`).
        pixel_values: The crops as the model takes them (faces x channels x height x width).
        targets: The class index each face's map is for.
        method: "occlusion" or "grad-cam" (see METHODS).
        min_side: Grad-CAM looks at the last feature map with sides of at least this many cells.

    Each map is scaled so that its largest value is 1; a map with nothing positive is all 0.
    """
    method = explain_method(method)
    try:  # inside try: transformers' check_imports then leaves captum optional for the folder's remote code
        from captum.attr import LayerAttribution, LayerGradCam, Occlusion
    except ImportError as error:
        raise ImportError("Heat maps need captum: pip install captum") from error

    if len(pixel_values) == 0:
        return np.zeros((0, *pixel_values.shape[-2:]), dtype=np.float32)
    shell = model_shell(model)
    forward = _LogitsOf(shell)
    targets = torch.as_tensor(list(targets), dtype=torch.long, device=pixel_values.device)
    inputs = pixel_values.detach().to(dtype=next(shell.parameters()).dtype)
    if method == "grad-cam":
        layer = gradcam_layer(shell, inputs[:1], min_side)
        maps = LayerGradCam(forward, layer).attribute(inputs, target=targets, relu_attributions=True)
        maps = LayerAttribution.interpolate(maps, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    else:
        channels = inputs.shape[1]
        with torch.no_grad():
            maps = Occlusion(forward).attribute(
                inputs, target=targets, baselines=0, perturbations_per_eval=max(1, OCCLUSION_BATCH // len(inputs)),
                sliding_window_shapes=(channels, OCCLUSION_WINDOW, OCCLUSION_WINDOW),
                strides=(channels, OCCLUSION_STRIDE, OCCLUSION_STRIDE),
            )
    maps = maps.detach().float().sum(1).clamp(min=0)  # over channels; only what raises the class
    peak = maps.flatten(1).amax(1).clamp(min=torch.finfo(torch.float32).tiny)
    return (maps / peak[:, None, None]).clamp(0, 1).cpu().numpy().astype(np.float32)


class _LogitsOf(nn.Module):
    """The model as captum calls it: pixel values in, the logits tensor out (a ModelOutput has no `.shape`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Occlusion's passes (no gradients) in CPU-sized parts; Grad-CAM's hooks need the layer called once.
        if torch.is_grad_enabled():
            return self.model(pixel_values=pixel_values).logits
        return model_logits(self.model, pixel_values)


def model_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """`model(pixel_values=...).logits`, in passes of CPU_FORWARD_ROWS rows on a CPU."""
    if pixel_values.device.type != "cpu" or len(pixel_values) <= CPU_FORWARD_ROWS:
        return model(pixel_values=pixel_values).logits
    return torch.cat([model(pixel_values=rows).logits for rows in pixel_values.split(CPU_FORWARD_ROWS)])


def model_shell(model: nn.Module) -> nn.Module:
    """A copy of the model's modules that shares its parameters and buffers, in eval mode.

    Hooks registered on the shell stay on it, and nothing is copied but module objects (cheap next to a
    forward pass), so each call gets its own. On a CPU the convolution weights are the exception: the shell
    gets channels_last copies of them, which made occlusion maps 1.15-1.40x faster than the weights' own layout
    (benchmarks/results/occlusion_rows.md, 2 threads) with maps within 1e-5 of its; the model is left as it is.
    """
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    for weight in model.parameters():
        if weight.dim() == 4 and weight.device.type == "cpu":
            shared[id(weight)] = nn.Parameter(weight.detach().contiguous(memory_format=torch.channels_last),
                                              requires_grad=weight.requires_grad)
    shell = copy.deepcopy(model, memo=shared)
    return shell.eval()


def gradcam_layer(model: nn.Module, example: torch.Tensor, min_side: int = MIN_SIDE) -> nn.Module:
    """The module whose output is the model's last feature map with sides of at least `min_side` cells.

    Found by one forward pass of `example` that records which modules give 4-D outputs (batch x channels x
    height x width), in the order they finish; its hooks are removed before returning.

    Raises:
        ValueError: the model has no such feature map (e.g. a vision transformer).
    """
    finished: list[tuple[nn.Module, tuple[int, ...]]] = []

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            finished.append((module, tuple(output.shape[-2:])))

    handles = [module.register_forward_hook(record) for module in model.modules() if module is not model]
    try:
        with torch.no_grad():
            model(pixel_values=example)
    finally:
        for handle in handles:
            handle.remove()
    large = [module for module, side in finished if min(side) >= min_side]
    if not large:
        raise ValueError(f"{type(model).__name__} has no feature map of at least {min_side}x{min_side} cells for Grad-CAM; "
                         "use method='occlusion'.")
    return large[-1]


def box_heatmap(crop_map: np.ndarray, box: Sequence[int], square: Square | None) -> np.ndarray:
    """A crop's heat map resampled onto its face box: box height x box width, float32 in [0, 1].

    Args:
        crop_map: The crop's map (face_heatmaps gives one per crop).
        box: (x0, y0, x1, y1) in the photo's pixels (x1, y1 exclusive).
        square: Where the crop lies in the same pixels (face_detection.crop_square); None when the crop is
            the box itself, stretched (a photo classified whole).
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    width, height = max(1, x1 - x0), max(1, y1 - y0)
    # Each box pixel's centre in the photo ...
    xs = torch.arange(width, dtype=torch.float64) + x0 + 0.5
    ys = torch.arange(height, dtype=torch.float64) + y0 + 0.5
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    if square is None:
        u, v, side_u, side_v = px - x0, py - y0, width, height
    else:
        # ... in the crop's own pixels: the crop's corner moved to 0, its turn undone.
        left, top, side, angle = square
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        dx, dy = px - left, py - top
        u, v, side_u, side_v = cos * dx + sin * dy, -sin * dx + cos * dy, side, side
    grid = torch.stack([2 * u / side_u - 1, 2 * v / side_v - 1], dim=-1)[None].float()
    crop = torch.from_numpy(np.ascontiguousarray(crop_map, dtype=np.float32))[None, None]
    sampled = nn.functional.grid_sample(crop, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[0, 0].clamp(0, 1).numpy()


__all__ = ["DEFAULT_METHOD", "METHODS", "MIN_SIDE", "Square", "box_heatmap", "explain_method", "face_heatmaps", "gradcam_layer",
           "model_shell", "target_index"]
