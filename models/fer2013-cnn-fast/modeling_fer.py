"""The FER CNN: a small VGG-style network for facial-expression classification.

Like `configuration_fer.py`, this file travels with saved models as remote code, so it only imports
torch, transformers and its sibling configuration file.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from .configuration_fer import FerConfig


class FerCNNConvLayer(nn.Module):
    """3x3 convolution, batch norm, ReLU: the unit every stage repeats."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        # No conv bias: the batch norm right after it has its own.
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_state)))


class FerCNNStage(nn.Module):
    """`depth` conv layers (the first with stride `stride`), then 2x2 max pooling and dropout."""

    def __init__(self, config: FerConfig, in_channels: int, out_channels: int, depth: int, stride: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            FerCNNConvLayer(in_channels, out_channels, stride),
            *[FerCNNConvLayer(out_channels, out_channels) for _ in range(depth - 1)],
        )
        self.pooler = nn.MaxPool2d(kernel_size=2)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pooler(self.layers(hidden_state)))


class FerCNNPreTrainedModel(PreTrainedModel):
    config_class = FerConfig
    base_model_prefix = "fer_cnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["FerCNNStage"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            if module.running_mean is not None:
                nn.init.zeros_(module.running_mean)
                nn.init.ones_(module.running_var)
                module.num_batches_tracked.zero_()
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)


class FerCNNModel(FerCNNPreTrainedModel):
    """The convolutional trunk: pixels in, a pooled feature vector out."""

    def __init__(self, config: FerConfig):
        super().__init__(config)
        channels = [config.num_channels, *config.hidden_sizes]
        first_stride = 2 if config.downsample_in_first_stage else 1
        self.stages = nn.ModuleList(
            FerCNNStage(config, channels[i], channels[i + 1], depth, stride=first_stride if i == 0 else 1)
            for i, depth in enumerate(config.depths)
        )
        self.pooler = nn.AdaptiveAvgPool2d(1)
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, return_dict: bool | None = None
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden_state = pixel_values
        hidden_states = ()
        for stage in self.stages:
            hidden_state = stage(hidden_state)
            if output_hidden_states:
                hidden_states = hidden_states + (hidden_state,)
        pooled_output = self.pooler(hidden_state).flatten(1)
        if not return_dict:
            return (hidden_state, pooled_output, hidden_states) if output_hidden_states else (hidden_state, pooled_output)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden_state,
            pooler_output=pooled_output,
            hidden_states=hidden_states if output_hidden_states else None,
        )


class FerCNNForImageClassification(FerCNNPreTrainedModel):
    """The FER CNN with a linear classification head over the pooled features."""

    def __init__(self, config: FerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.fer_cnn = FerCNNModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_sizes[-1], config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        r"""No `**kwargs` on purpose: Trainer would then take the loss as summed over `num_items_in_batch`
        and scale it by the process count under DDP, while ours is a per-batch mean.

        labels (`torch.LongTensor` of shape `(batch_size,)`, or `torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Class indices for the cross-entropy loss, or per-class target distributions (e.g. the FER+
            annotator votes normalised to sum to 1) for a soft-label cross-entropy.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.fer_cnn(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        # Temperature scaling (`config.temperature`, 1 until `calibrate` fits it): calibrated probabilities
        # for every caller of forward, the ONNX files and pipelines included; the argmax is unchanged.
        logits = self.classifier(self.dropout(outputs.pooler_output)) / self.config.temperature

        loss = None
        if labels is not None:
            # Under bf16 autocast the logits are bf16; the loss is computed in fp32 for stability.
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device))

        if not return_dict:
            output = (logits, outputs.hidden_states) if output_hidden_states else (logits,)
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = ["FerCNNForImageClassification", "FerCNNModel", "FerCNNPreTrainedModel"]
