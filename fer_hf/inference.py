"""Fast CPU classification of face crops: the runtime of the demo and of `python -m fer_hf predict`.

    from fer_hf.inference import InferenceRunner

    runner = InferenceRunner(model, image_processor)   # mode="auto": the fastest safe mode here
    probabilities = runner(faces)                      # PIL faces -> (faces x labels) float32 array
    runner.mode                                        # e.g. "int8", "bf16", "fp32", "eager"

Modes (benchmarks/results/inference.md measures each):
- "onnx-int8", "onnx-fp32": FER CNNs only. ONNX Runtime on the model folder's `onnx/model_quantized.onnx`
  or `onnx/model.onnx` (`python -m fer_hf export`; fer_hf.export says how the int8 file is made), if
  it was made from the model's weights, else on one exported in memory (about 3 s). One face runs on a
  one-thread session, batches on one with torch's thread count.
- "int8": FER CNNs only. Batch norm folded into the convolutions, weights int8 per channel, activations
  uint8 with ranges taken from the batch-norm statistics (no calibration data needed), run by PyTorch's
  x86 quantized kernels. About twice the speed of bf16; on PublicTest its top class is fp32's for
  over 99% of faces (tests/test_inference.py checks the bundled models; benchmarks/results/inference.md
  gives each mode's accuracy).
- "bf16": bf16 autocast, channels_last, TorchScript trace and freeze (batch norm folded); needs a CPU
  with native bf16 (AVX512-BF16 or AMX).
- "fp32": TorchScript trace and freeze in fp32: the eager model's results to ~1e-6.
- "eager": the model as it is, on its own device and dtype: what any other transformers classifier
  (a ViT from the Hub, say) gets, as tracing an arbitrary model is not known to be safe.

"auto" picks int8, else bf16, else fp32 for a FER CNN on the CPU, and eager otherwise; a mode that
cannot be built on this machine (a missing kernel, a future torch without quantized tensors, no
onnxruntime) falls back to the next one in MODES, and `runner.mode` says which one runs.
FER_HF_RUNTIME overrides "auto" (e.g. FER_HF_RUNTIME=onnx-int8).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import platform
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .quantization import ACTIVATION_RANGE_SIGMAS, FerPixels, LogitsOnly, activation_range, is_fer_cnn

logger = logging.getLogger(__name__)

MODES = ("auto", "onnx-int8", "onnx-fp32", "int8", "bf16", "fp32", "eager")
# Up to this many faces per call run on a one-thread ONNX Runtime session: for one face (two, mirror
# averaged) waking a second thread costs more than it saves.
ONNX_SMALL_BATCH = 2


def default_mode(model: Any) -> str:
    """The fastest mode worth trying for `model` here (before fallbacks): see the module docstring."""
    if not is_fer_cnn(model) or _device(model).type != "cpu":
        return "eager"
    if _int8_engine() is not None:
        return "int8"
    return "bf16" if bf16_supported() else "fp32"


def bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check: AVX512-BF16 or AMX); else bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_name() -> str:
    """This CPU's model name and whether it has the two features our fast paths depend on (int8
    that sums in int32, native bf16), for the machine line of run records and benchmark tables: a
    speed figure holds only for CPUs with the same features (Linux's /proc/cpuinfo; elsewhere
    platform's shorter name)."""
    names = [line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")]
    name = names[0] if names else platform.processor() or platform.machine()
    vnni = "VNNI" if _has_vnni() else "no VNNI"
    bf16 = "native bf16" if bf16_supported() else "no native bf16"
    return f"{name} ({vnni}, {bf16})"


def _cpuinfo() -> str:
    """Linux's /proc/cpuinfo (model name and flags); empty where there is none."""
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


class InferenceRunner:
    """Class probabilities of face crops, in the fastest mode that this model and CPU allow.

    Args:
        model: A transformers image classifier (`model.config.id2label`); put in eval mode, never modified.
        image_processor: Its processor; a FER processor's steps are done here directly, with the same
            pixels as the processor gives (tested), as its generic call costs more than a 48x48 face.
        mode: "auto" (FER_HF_RUNTIME if set, else `default_mode`) or one of "onnx-int8", "onnx-fp32",
            "int8", "bf16", "fp32", "eager". A mode that does not apply or fails to build falls back
            towards "eager".

    Attributes:
        mode: The mode that runs.
        labels: Class names in output order.
    """

    def __init__(self, model: Any, image_processor: Any, mode: str = "auto") -> None:
        requested = os.environ.get("FER_HF_RUNTIME", "auto") if mode == "auto" else mode
        if requested not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {requested!r}.")
        self.model = model.eval()
        self.image_processor = image_processor
        id2label = model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]
        self.multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
        self._pixels = FerPixels.from_processor(image_processor) if is_fer_cnn(model) else None
        wanted = default_mode(model) if requested == "auto" else requested
        self.mode, self._forward = self._build(wanted)

    def __repr__(self) -> str:
        return f"InferenceRunner(mode={self.mode!r}, model={type(self.model).__name__})"

    @torch.inference_mode()
    def __call__(self, faces: Sequence[Any]) -> np.ndarray:
        """Probabilities (faces x labels, float32; sigmoid for multi-label models) of the faces, one forward pass."""
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        pixel_values = self.pixel_values(faces)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.mode == "bf16"):
            logits = self._forward(pixel_values).float()
        return (logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)).cpu().numpy()

    def pixel_values(self, faces: Sequence[Any]) -> torch.Tensor:
        """The model input of the faces: the image processor's `pixel_values`, on the model's device and dtype."""
        pixels = self._pixels(faces) if self._pixels is not None else None
        if pixels is not None:
            pixel_values = torch.from_numpy(pixels)
        else:
            pixel_values = self.image_processor(images=list(faces), return_tensors="pt")["pixel_values"]
        if self.mode == "eager":
            pixel_values = pixel_values.to(device=_device(self.model), dtype=getattr(self.model, "dtype", None))
        return pixel_values

    def _build(self, mode: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
        """The forward function of `mode`, or of the first mode after it that builds here."""
        chain = MODES[MODES.index(mode):]
        for candidate in chain:
            if candidate != "eager" and (not is_fer_cnn(self.model) or _device(self.model).type != "cpu"):
                continue  # only FER CNNs on the CPU are known to trace and quantize correctly
            try:
                with warnings.catch_warnings():
                    # torch 2.13 marks TorchScript and quantized tensors deprecated; they are still its
                    # fastest CPU path (torch.compile: as fast, but seconds of compiling per batch size).
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.simplefilter("ignore", FutureWarning)  # transformers' attributes that tracing reads
                    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                    return candidate, self._forward_of(candidate)
            except Exception as error:  # an unsupported CPU, engine or model layout: try the next mode
                logger.warning("Inference mode %r is not available (%s: %s); trying the next one.",
                               candidate, type(error).__name__, error)
        raise AssertionError("unreachable: eager always builds")

    def _forward_of(self, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
        model = self.model
        if mode.startswith("onnx"):
            return self._onnx_forward(mode)
        if mode == "eager":
            return lambda pixel_values: model(pixel_values=pixel_values).logits
        if mode == "int8":
            if self._pixels is None:
                raise ValueError("int8 needs a FER image processor with rescaling and normalisation")
            int8 = Int8FerCNN(model, self._pixels.input_scale()).eval()
            example = torch.zeros(1, model.config.num_channels, model.config.image_size, model.config.image_size)
            with torch.no_grad():  # traced: ~0.25 ms less for one face than the module's Python calls
                return _first_call_with_one_face(torch.jit.freeze(torch.jit.trace(int8, example, check_trace=False).eval()), example)
        if mode == "bf16" and not bf16_supported():
            raise RuntimeError("this CPU has no native bf16")
        logits_only = LogitsOnly(copy.deepcopy(model))  # channels_last and freezing must not touch the caller's model
        if mode == "bf16":
            logits_only = logits_only.to(memory_format=torch.channels_last)
        size = model.config.image_size
        example = torch.zeros(1, model.config.num_channels, size, size)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            traced = torch.jit.trace(logits_only.requires_grad_(False), example, check_trace=False)
        # freeze() folds batch norm into the convolutions and inlines the weights as constants.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            return _first_call_with_one_face(torch.jit.freeze(traced.eval()), example)


    def _onnx_forward(self, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """ONNX Runtime on the model folder's ONNX file of `mode` if it was made from these weights, else
        on one exported here (fer_hf.export): a one-thread session for one face, a session with torch's
        thread count for batches."""
        from . import export

        int8 = mode == "onnx-int8"
        if int8 and self._pixels is None:
            raise ValueError("onnx-int8 needs a FER image processor with rescaling and normalisation")
        source = self._onnx_file(export.ONNX_INT8_FILE if int8 else export.ONNX_FILE)
        if source is None:
            fp32 = export.export_fp32(self.model)
            source = (export.quantize_int8(self.model, fp32, self.image_processor) if int8 else fp32).SerializeToString()
        threads = torch.get_num_threads()
        small = export.onnx_session(source, threads=1)
        large = export.onnx_session(source, threads=threads) if threads > 1 else small

        def forward(pixel_values: torch.Tensor) -> torch.Tensor:
            session = small if len(pixel_values) <= ONNX_SMALL_BATCH else large
            feed = {export.INPUT_NAME: pixel_values.numpy()}
            return torch.from_numpy(session.run([export.OUTPUT_NAME], feed)[0])

        example = torch.zeros(1, self.model.config.num_channels, self.model.config.image_size,
                              self.model.config.image_size)
        forward(example)  # builds the kernels of the first call now rather than on the first face
        return forward

    def _onnx_file(self, name: str) -> Path | None:
        """`name` in the model's local folder if it is there and was made from these weights, else None."""
        from .export import file_weights_digest, weights_digest

        folder = Path(str(getattr(self.model, "name_or_path", "") or ""))
        path = folder / name
        if not folder.is_dir() or not path.is_file():
            return None
        if file_weights_digest(path) != weights_digest(self.model):
            logger.warning("%s was made from other weights than the model's; exporting the model again in memory.",
                           path)
            return None
        return path


class Int8FerCNN(nn.Module):
    """A FER CNN in int8: each conv + batch norm + ReLU unit is one quantized ConvReLU2d.

    The input is quantized losslessly (each normalised pixel back to its uint8 value, see
    `FerPixels.input_scale`); the pooled features are dequantized and the linear head runs in fp32.

    Args:
        model: A FerCNNForImageClassification in eval mode (only read).
        input_scale: (scale, zero point, shift) of the input, from `FerPixels.input_scale`.
        sigmas: Activation ranges, see ACTIVATION_RANGE_SIGMAS.
    """

    def __init__(self, model: Any, input_scale: tuple[float, int, float], sigmas: float = ACTIVATION_RANGE_SIGMAS):
        super().__init__()
        from torch.ao.nn.intrinsic.quantized import ConvReLU2d

        if _int8_engine() is None:
            raise RuntimeError(f"the quantized engine is {torch.backends.quantized.engine!r}, not an x86 one")
        self.input_scale, self.input_zero_point, self.input_shift = input_scale
        stages = []
        for stage in model.fer_cnn.stages:
            units = []
            for layer in stage.layers:
                conv, norm = layer.convolution, layer.normalization
                if not isinstance(layer.activation, nn.ReLU) or conv.bias is not None:
                    raise ValueError(f"int8 expects conv (no bias) + batch norm + ReLU units, got {layer}")
                weight, bias = _fold_batch_norm(conv, norm)
                if not units and not stages:
                    # The input is quantized as x + shift: take shift * sum(weights) back off the bias.
                    bias = bias - self.input_shift * weight.sum(dim=(1, 2, 3))
                unit = ConvReLU2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
                unit.set_weight_bias(_quantize_per_channel(weight), bias)
                unit.scale = activation_range(norm, sigmas) / 255
                unit.zero_point = 0  # after ReLU: 0..range
                units.append(unit)
            stages.append(nn.Sequential(*units, stage.pooler))  # max pooling runs on uint8 as it is
        self.stages = nn.Sequential(*stages)
        self.classifier = copy.deepcopy(model.classifier).float()
        # The model's forward divides its logits by the calibrated temperature; this graph must too.
        self.temperature = float(getattr(model.config, "temperature", 1.0))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        quantized = torch.quantize_per_tensor(
            pixel_values + self.input_shift, self.input_scale, self.input_zero_point, torch.quint8
        )
        features = self.stages(quantized).dequantize().mean(dim=(2, 3))  # global average pooling
        return self.classifier(features) / self.temperature


def _fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the convolution that equals conv followed by batch norm in eval mode."""
    with torch.no_grad():
        factor = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        weight = conv.weight * factor.reshape(-1, 1, 1, 1)
        bias = norm.bias - norm.running_mean * factor
    return weight.float().contiguous(), bias.float()


def _quantize_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric int8, one scale per output channel (what the x86 kernels expect), in 7 bits where needed.

    Without VNNI, FBGEMM multiplies uint8 activations by int8 weights with AVX2's vpmaddubsw, which adds
    each pair of products into a saturating int16: 255 * 127 * 2 overflows it and the outputs go wrong
    (probabilities off by up to 0.69 on the bundled models, on an AVX2-only EPYC). Weights within +-63
    keep every pair below 2**15 (255 * 64 * 2 = 32,640); VNNI sums in int32 and keeps all 8 bits.
    """
    levels = 127 if _has_vnni() else 63
    scales = (weight.abs().amax(dim=(1, 2, 3)).double() / levels).clamp(min=1e-12)
    return torch.quantize_per_channel(weight, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8)


def _first_call_with_one_face(forward: torch.jit.ScriptModule, one_face: torch.Tensor) -> torch.jit.ScriptModule:
    """Calls a traced forward once on one face, and returns it.

    TorchScript's executor optimizes a graph for the input shapes of its first call; other shapes take a
    slower fallback. Batches run as fast after either first call, one face does not, and one face is
    what the demo and `predict` run most (`benchmarks/bench_inference.py` measures that path).
    """
    with torch.inference_mode():
        forward(one_face)
    return forward


def _int8_engine() -> str | None:
    """The quantized engine weights are packed for if it is an x86 one (FBGEMM/oneDNN; the default on
    x86-64), else None: ARM's QNNPACK is not tested here."""
    engine = torch.backends.quantized.engine
    return engine if engine in ("x86", "fbgemm", "onednn") else None


@functools.cache
def _has_vnni() -> bool:
    """Whether this CPU has int8 dot products that sum in int32 (AVX512-VNNI, AVX-VNNI or AMX), from
    Linux's /proc/cpuinfo flags; False where they cannot be read, which only costs weights a bit."""
    return bool(set(_cpuinfo().split()) & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _device(model: Any) -> torch.device:
    return getattr(model, "device", torch.device("cpu"))


__all__ = ["ACTIVATION_RANGE_SIGMAS", "MODES", "activation_range", "FerPixels", "InferenceRunner", "Int8FerCNN", "bf16_supported",
           "default_mode"]
