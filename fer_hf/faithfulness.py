"""Whether heat maps show what the model used: the deletion test and the model-randomisation sanity check.

    from fer_hf.faithfulness import deletion_test, randomised_copy, rank_correlations

    drops = deletion_test(model, pixel_values, maps, targets)   # per face: probability lost, top vs random pixels
    (drops.top > drops.random).mean()                           # the share of faces where the map beats chance
    rho = rank_correlations(maps, face_heatmaps(randomised_copy(model), pixel_values, targets))

Deletion: the `fraction` of a face's pixels with the highest attribution are replaced by the face's mean
pixel, and the predicted class's probability should drop more than when as many random pixels are replaced
(Samek et al., 2017, "Evaluating the visualization of what a deep neural network has learned").
Randomisation: a map that barely changes when the model's weights are re-initialised shows the image, not
the model (Adebayo et al., 2018, "Sanity checks for saliency maps"). benchmarks/bench_explain.py runs both
on PublicTest faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

# The share of a face's pixels replaced, and random draws averaged for the baseline.
DELETION_FRACTION = 0.1
RANDOM_DRAWS = 10


@dataclass(frozen=True)
class DeletionResult:
    """Per face: its predicted class's probability as it is, and the drops after each replacement."""

    probability: np.ndarray
    top: np.ndarray  # drop when the highest-attributed pixels are replaced
    random: np.ndarray  # mean drop over RANDOM_DRAWS replacements of as many random pixels
    bottom: np.ndarray  # drop when the lowest-attributed pixels are replaced

    @property
    def beats_random(self) -> np.ndarray:
        """Per face: the map's pixels cost the class more than random ones."""
        return self.top > self.random


def deletion_test(model: nn.Module, pixel_values: torch.Tensor, maps: np.ndarray, targets: Sequence[int],
                  fraction: float = DELETION_FRACTION, draws: int = RANDOM_DRAWS, seed: int = 0) -> DeletionResult:
    """Replaces each face's top `fraction` of pixels by the map (ties in random order), its bottom `fraction`,
    and `draws` times as many random pixels, by the face's mean; returns the drops in its `targets` class's
    probability.

    Args:
        model: The eager classifier the maps explain.
        pixel_values: The faces (faces x channels x height x width), as the model takes them.
        maps: Their heat maps at the same height and width (faces x height x width).
        targets: The class of each face the maps are for.
    """
    generator = np.random.default_rng(seed)
    faces, _, height, width = pixel_values.shape
    count = max(1, round(fraction * height * width))
    targets = torch.as_tensor(list(targets), dtype=torch.long)
    mean = pixel_values.mean(dim=(1, 2, 3), keepdim=True)

    def replaced(masks: np.ndarray) -> torch.Tensor:  # faces x height x width booleans
        mask = torch.from_numpy(masks)[:, None].to(pixel_values.device)
        return torch.where(mask, mean, pixel_values)

    def chosen(order: np.ndarray) -> np.ndarray:
        masks = np.zeros((faces, height * width), dtype=bool)
        np.put_along_axis(masks, order[:, :count], True, axis=1)
        return masks.reshape(faces, height, width)

    flat = np.asarray(maps, dtype=np.float64).reshape(faces, -1)
    # Highest first; pixels of equal value (Grad-CAM's zeros) in random order rather than top-left first.
    tie_break = generator.random(flat.shape)
    top_order, bottom_order = np.lexsort((tie_break, -flat), axis=1), np.lexsort((tie_break, flat), axis=1)
    probability = _probabilities(model, pixel_values, targets)
    top = probability - _probabilities(model, replaced(chosen(top_order)), targets)
    bottom = probability - _probabilities(model, replaced(chosen(bottom_order)), targets)
    random = np.mean([
        probability - _probabilities(model, replaced(chosen(generator.permuted(
            np.tile(np.arange(height * width), (faces, 1)), axis=1))), targets)
        for _ in range(draws)
    ], axis=0)
    return DeletionResult(probability, top, random, bottom)


@torch.no_grad()
def _probabilities(model: nn.Module, pixel_values: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    logits = model(pixel_values=pixel_values).logits.float()
    return torch.softmax(logits, -1).gather(1, targets[:, None].to(logits.device))[:, 0].cpu().numpy()


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A model of the same class and config with freshly initialised weights (its `_init_weights`), in eval mode."""
    torch.manual_seed(seed)
    return type(model)(model.config).to(next(model.parameters()).device).eval()


def rank_correlations(maps: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps (faces); NaN where either map is constant."""
    correlations = []
    for first, second in zip(maps, others):
        first, second = np.ravel(first), np.ravel(second)
        constant = np.ptp(first) == 0 or np.ptp(second) == 0
        correlations.append(np.nan if constant else spearmanr(first, second).statistic)
    return np.asarray(correlations, dtype=np.float64)


__all__ = ["DELETION_FRACTION", "RANDOM_DRAWS", "DeletionResult", "deletion_test", "randomised_copy",
           "rank_correlations"]
