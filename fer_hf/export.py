"""ONNX files of a model, in the layout transformers.js and the Hub expect: `onnx/model.onnx` (fp32) and
`onnx/model_quantized.onnx` (int8), beside the model's config and image processor.

    python -m fer_hf export models/fer2013-cnn exported/ --int8

- fp32: `torch.onnx.export` (the torch.export-based exporter; batch norm folded into the convolutions),
  input `pixel_values` (batch x channels x height x width, any batch size), output `logits`. Any
  transformers image classifier that torch.export can trace goes through the same path (a ViT does).
  Every export is checked against PyTorch on the spot (`PARITY_TOLERANCE`).
- int8 (FER CNNs): ONNX Runtime's static QDQ quantization, int8 weights per channel and uint8 activations.
  Each conv + batch norm + ReLU unit's activation range comes from its batch-norm statistics, as in
  fer_hf.inference's int8 mode (`fer_hf.quantization.ACTIVATION_RANGE_SIGMAS`), and the input range from the image
  processor, so no calibration images are needed. On PublicTest this keeps fp32's top class for more
  faces than a min-max calibration on real training faces (tests/test_export.py checks at least 98.5%).
  The pooling and the linear head stay fp32. Weights use 7 bits (`reduce_range`): the file is portable,
  and on AVX2-only CPUs ONNX Runtime's uint8 x int8 kernel (vpmaddubsw) saturates its int16 sums of two
  products with 8-bit weights and loses accuracy, as fer_hf.inference's int8 mode would there.

Each file records a digest of the weights it was made from (`WEIGHTS_DIGEST_KEY` in its metadata), so
that the runtime can tell a file left over from other weights.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .quantization import FerPixels, LogitsOnly, activation_range, is_fer_cnn

logger = logging.getLogger(__name__)

ONNX_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model_quantized.onnx"
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
WEIGHTS_DIGEST_KEY = "fer_hf.weights_sha256"
# Largest |logit difference| accepted between ONNX Runtime's fp32 and PyTorch's on the same input: both
# sum the same float32 products in another order, which moves a logit by about 1e-6.
PARITY_TOLERANCE = 1e-4


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers (names, shapes and float32 values), and of its calibrated
    temperature where it has one (the graph divides the logits by it: an ONNX file from before the model was
    calibrated is stale)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    temperature = getattr(getattr(model, "config", None), "temperature", 1.0)
    if temperature != 1.0:  # an uncalibrated model keeps the digest it always had
        digest.update(f"temperature={float(temperature)!r}".encode())
    return digest.hexdigest()


def export_fp32(model: Any) -> Any:
    """The model's fp32 ONNX graph (an `onnx.ModelProto`), checked against PyTorch.

    Args:
        model: A transformers image classifier; only read (a copy is exported, in eval mode on the CPU).

    Raises:
        ValueError: The model cannot be traced by torch.export (the message gives the exporter's reason),
            or its ONNX logits differ from PyTorch's by more than PARITY_TOLERANCE.
    """
    # A copy in eval mode: dropout off and batch norm on its running statistics, whatever the caller's
    # model is doing; float32 on the CPU, as the ONNX file is.
    logits_only = LogitsOnly(copy.deepcopy(model).float().cpu().eval()).eval().requires_grad_(False)
    example = _example_input(model, batch=2)  # not 1: torch.export would fix a batch dimension of size 1
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                logits_only, (example,), dynamo=True, external_data=False, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1)}},
            )
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{type(model).__name__} cannot be exported to ONNX: torch.export failed "
                         f"({type(error).__name__}: {reason})") from error
    proto = program.model_proto
    _set_metadata(proto, {WEIGHTS_DIGEST_KEY: weights_digest(model)})
    pixel_values = _example_input(model, batch=8, seed=1)
    difference = max_logit_difference(logits_only, proto, pixel_values)
    if difference > PARITY_TOLERANCE:
        raise ValueError(f"the ONNX export of {type(model).__name__} gives logits {difference:.2g} away from "
                         f"PyTorch's (at most {PARITY_TOLERANCE:g} expected): the exported graph is wrong")
    return proto


def quantize_int8(model: Any, fp32: Any, image_processor: Any) -> Any:
    """The int8 (QDQ) graph of a FER CNN's fp32 ONNX graph, with activation ranges from its batch norm.

    Args:
        model: The FerCNNForImageClassification `fp32` was exported from (its batch norms are read).
        fp32: Its fp32 graph from `export_fp32`.
        image_processor: Its FER image processor (the input range).

    Raises:
        ValueError: The model is not a FER CNN, or its processor is not a plain FER one: their activation
            ranges would need calibration images, which this does not take.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    pixels = FerPixels.from_processor(image_processor)
    if not is_fer_cnn(model) or pixels is None:
        raise ValueError(f"int8 export needs a FER CNN with a FER image processor (its activation ranges come "
                         f"from its batch norm); {type(model).__name__} can be exported in fp32 only")
    units = [layer for stage in model.fer_cnn.stages for layer in stage.layers]
    relus = [node.output[0] for node in fp32.graph.node if node.op_type == "Relu"]
    if len(relus) != len(units):
        raise ValueError(f"expected one ReLU per conv unit in the ONNX graph ({len(units)}), found {len(relus)}")
    low, high = (0 - pixels.mean) / pixels.std, (255 * pixels.rescale_factor - pixels.mean) / pixels.std
    overrides = {INPUT_NAME: [{"rmin": np.float32(low), "rmax": np.float32(high)}]}
    for relu, unit in zip(relus, units):
        overrides[relu] = [{"rmin": np.float32(0.0), "rmax": np.float32(activation_range(unit.normalization))}]

    class OneBatch(CalibrationDataReader):  # every quantized tensor's range is set above: the values do not matter
        def __init__(self):
            self.batches = iter([{INPUT_NAME: _example_input(model, batch=1).numpy()}])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="fer-hf-onnx-") as folder:
        source, target = Path(folder) / "model.onnx", Path(folder) / "model_quantized.onnx"
        onnx.save(fp32, source)
        with _quiet(""):
            quantize_static(source, target, OneBatch(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                            op_types_to_quantize=["Conv", "Relu", "MaxPool"],
                            extra_options={"TensorQuantOverrides": overrides})
        quantized = onnx.load(target)
    _set_metadata(quantized, {WEIGHTS_DIGEST_KEY: weights_digest(model)})
    return quantized


def export_model(model: Any, image_processor: Any, output_dir: str | Path, *, int8: bool = False) -> list[Path]:
    """Writes `onnx/model.onnx` (and with `int8`, `onnx/model_quantized.onnx`) into `output_dir`.

    When `output_dir` is not the model's own folder, the model (safetensors, config, code files, the face
    pipeline) and its processor are saved there too, so that it is a complete model folder.

    Returns:
        The ONNX files written.
    """
    import onnx

    folder = Path(output_dir)
    source = Path(str(getattr(model, "name_or_path", "") or ""))
    if not (source.is_dir() and source.resolve() == folder.resolve()):
        from .model import copy_model_code

        model.save_pretrained(folder)
        image_processor.save_pretrained(folder)
        copy_model_code(folder)  # the saved config names the pipeline; its code must come along
    fp32 = export_fp32(model)
    protos = {ONNX_FILE: fp32}
    if int8:
        protos[ONNX_INT8_FILE] = quantize_int8(model, fp32, image_processor)
    written = []
    for name, proto in protos.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, path)
        written.append(path)
    return written


def onnx_session(model_file: str | Path | bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session with `threads` intra-op threads, which sleep rather than spin between
    calls (on a small machine shared with face detection, spinning threads take its cores)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: not its notes on unused initializers
    source = str(model_file) if isinstance(model_file, Path) else model_file
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def max_logit_difference(model: torch.nn.Module, onnx_model: Any, pixel_values: torch.Tensor) -> float:
    """Largest |logit| difference between `model` (a tensor-in, tensor-out module or a transformers
    classifier) and the ONNX graph (ModelProto, bytes or path) on `pixel_values`."""
    source = onnx_model.SerializeToString() if hasattr(onnx_model, "SerializeToString") else onnx_model
    session = onnx_session(source, threads=1)
    with torch.inference_mode():
        output = model(pixel_values)
        expected = output if isinstance(output, torch.Tensor) else output.logits
    logits = session.run([OUTPUT_NAME], {INPUT_NAME: pixel_values.numpy()})[0]
    return float(np.abs(logits - expected.float().numpy()).max())


def file_weights_digest(path: str | Path) -> str | None:
    """The weights digest recorded in an ONNX file (None if it has none); reads the metadata only."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}.get(WEIGHTS_DIGEST_KEY)


def _example_input(model: Any, batch: int, seed: int = 0) -> torch.Tensor:
    """Normal random pixels of the model's input shape (config `num_channels` and `image_size`)."""
    config = model.config
    size = config.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, getattr(config, "num_channels", 3), *size, generator=generator)


def _set_metadata(proto: Any, values: dict[str, str]) -> None:
    kept = [prop for prop in proto.metadata_props if prop.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


@contextlib.contextmanager
def _quiet(*names: str):
    """Raises these loggers to errors only for a while (the exporter's progress lines and notes on the
    torchvision operators it skips; the quantizer's advice, on the root logger, to pre-process a graph
    that the exporter has already optimised)."""
    logs = [logging.getLogger(name) for name in names]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


__all__ = ["ONNX_FILE", "ONNX_INT8_FILE", "PARITY_TOLERANCE", "export_fp32", "export_model", "file_weights_digest",
           "max_logit_difference", "onnx_session", "quantize_int8", "weights_digest"]
