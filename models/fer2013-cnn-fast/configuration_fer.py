"""Configuration of the FER CNN, a small convolutional network for 48x48 facial-expression crops.

This file is copied next to every saved model (``register_for_auto_class``), so it imports nothing
from ``fer_hf``: people without our package load it with ``trust_remote_code=True``.
"""

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# FER-2013's label order (0..6), the order of the original `emotion` column.
FER2013_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

# Named size variants, timm style: pass the name to `FerConfig.from_variant`.
# `multiply-adds` are per 48x48 face; the speed/accuracy trade-off is measured in benchmarks/.
FER_CNN_VARIANTS: dict[str, dict] = {
    # ~0.3M parameters: the fast one, for webcam streams on a laptop CPU.
    "tiny": {"hidden_sizes": [16, 32, 64, 128], "depths": [2, 2, 2, 2]},
    # ~0.66M parameters.
    "small": {"hidden_sizes": [24, 48, 96, 192], "depths": [2, 2, 2, 2]},
    # ~1.2M parameters.
    "base": {"hidden_sizes": [32, 64, 128, 256], "depths": [2, 2, 2, 2]},
    # ~4.7M parameters: VGG-like widths, the accurate one.
    "large": {"hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2]},
    # base with a stride-2 first convolution: the same ~1.2M parameters at a quarter of the
    # multiply-adds (29M instead of 117M), as every stage sees half the resolution; about 4x the
    # faces/s of base in int8 (benchmarks/results/inference.md).
    "base-s2": {"hidden_sizes": [32, 64, 128, 256], "depths": [2, 2, 2, 2], "downsample_in_first_stage": True},
    # large's widths with base-s2's stride-2 start: ~4.7M parameters at base's multiply-adds (117M).
    # Wider layers keep the CPU busier: it trains as fast as base and runs faster in int8 (benchmarks/results/).
    "large-s2": {"hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "downsample_in_first_stage": True},
}


@strict
class FerConfig(PreTrainedConfig):
    r"""Configuration of [`FerCNNForImageClassification`].

    The network is a stack of stages; each stage is `depth` blocks of 3x3 convolution, batch norm and
    ReLU, followed by 2x2 max pooling and dropout. Global average pooling and a linear head follow.
    Every stage halves the resolution; `downsample_in_first_stage` halves it once more, at the start.

    Args:
        image_size: Height and width of the (square) input, in pixels.
        num_channels: Input channels: 1 for the grayscale FER-2013 faces.
        hidden_sizes: Output channels of each stage.
        depths: Number of convolution blocks in each stage (same length as `hidden_sizes`).
        hidden_dropout_prob: Dropout after each stage's pooling.
        classifier_dropout_prob: Dropout before the linear head.
        downsample_in_first_stage: Give the very first convolution a stride of 2 (as in transformers'
            ResNetConfig): the same parameters at about a quarter of the compute, for speed.
        temperature: The model's logits are divided by this in `forward` (temperature scaling), so that
            the softmax of one view is a calibrated probability. Fitted on held-out faces by
            `python -m fer_hf calibrate`; 1 (raw logits) for a model that was never calibrated.
        flip_temperature: The temperature of the scores made the default way, a face mirror-averaged
            where its top two classes are close (`flip_margin`), applied to the log of those scores.
        flip_all_temperature: The same for scores made with every face mirror-averaged.
        unsure_threshold: A face whose calibrated top probability is below this is reported as unsure;
            chosen by `calibrate` so that the faces at or above it are right at least 85% of the time.
            0: no face is unsure.

    Example:
    ```python
    >>> from fer_hf import FerConfig, FerCNNForImageClassification
    >>> config = FerConfig.from_variant("small")
    >>> model = FerCNNForImageClassification(config)
    ```
    """

    model_type = "fer_cnn"

    image_size: int = 48
    num_channels: int = 1
    hidden_sizes: list[int] | tuple[int, ...] = (24, 48, 96, 192)
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    hidden_dropout_prob: float = 0.1
    classifier_dropout_prob: float = 0.3
    downsample_in_first_stage: bool = False
    temperature: float = 1.0
    flip_temperature: float = 1.0
    flip_all_temperature: float = 1.0
    unsure_threshold: float = 0.0

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        if self.id2label is None and "num_labels" not in kwargs:
            # Default to the FER-2013 classes so a bare `FerConfig()` is a usable 7-class model.
            self.id2label = dict(enumerate(FER2013_LABELS))
            self.label2id = {name: i for i, name in self.id2label.items()}
        super().__post_init__(**kwargs)

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "FerConfig":
        """Builds the config of a named size variant (see `FER_CNN_VARIANTS`); kwargs override it."""
        if name not in FER_CNN_VARIANTS:
            raise ValueError(f"Unknown FER CNN variant {name!r}; choose one of {sorted(FER_CNN_VARIANTS)}.")
        return cls(**{**FER_CNN_VARIANTS[name], **kwargs})

    # `@strict` runs every `validate_*` method when the config is built or loaded.
    def validate_architecture(self):
        """Checks the shape arguments, so a bad config fails here and not deep inside `forward`."""
        super().validate_architecture()
        if not self.hidden_sizes or len(self.hidden_sizes) != len(self.depths):
            raise ValueError(
                f"hidden_sizes ({self.hidden_sizes}) and depths ({self.depths}) must be non-empty and of equal length."
            )
        if any(size < 1 for size in self.hidden_sizes) or any(depth < 1 for depth in self.depths):
            raise ValueError(f"hidden_sizes and depths must be positive, got {self.hidden_sizes} and {self.depths}.")
        if self.num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {self.num_channels}.")
        # Every stage halves the resolution, and so does a stride-2 first convolution; at least one
        # pixel must be left for the last stage.
        halvings = len(self.depths) + int(self.downsample_in_first_stage)
        if self.image_size < 2**halvings:
            raise ValueError(
                f"image_size={self.image_size} is too small for {len(self.depths)} stages"
                f"{' and a stride-2 first convolution' if self.downsample_in_first_stage else ''} "
                f"(needs at least {2**halvings})."
            )
        for name in ("hidden_dropout_prob", "classifier_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")

    def validate_calibration(self):
        """Checks the temperatures and the unsure threshold that `calibrate` stores."""
        for name in ("temperature", "flip_temperature", "flip_all_temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
        if not 0.0 <= self.unsure_threshold < 1.0:
            raise ValueError(f"unsure_threshold must be in [0, 1), got {self.unsure_threshold!r}.")


__all__ = ["FER2013_LABELS", "FER_CNN_VARIANTS", "FerConfig"]
