"""What travels with every model: the files each saved or pushed model folder carries as remote code.

The modules here (configuration, modeling, image processing, the face pipeline, face detection, the
libfacedetection binding, image reading) import only each other and libraries, so a folder's copies run
with `trust_remote_code=True` where fer_hf is not installed. `copy_model_code(folder)` is the one way they
get there: training saves, `push`, `export` and weight averaging all call it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .pipeline_fer import CUSTOM_PIPELINE, TASK

MODEL_CODE_DIR = Path(__file__).resolve().parent


def model_code_files() -> list[Path]:
    """The source files a model folder carries: every module of this package but its `__init__`."""
    return sorted(path for path in MODEL_CODE_DIR.glob("*.py") if path.name != "__init__.py")


def copy_model_code(folder: str | os.PathLike) -> list[Path]:
    """Copies the model code into a saved model folder and registers the face pipeline in its config.json.

    Each file is written anew, so a symlink in the folder (push_folder's staging) is replaced, not written
    through. Afterwards `pipeline(TASK, model=folder, trust_remote_code=True)` runs the folder's copies.

    Returns:
        The files written.

    Raises:
        FileNotFoundError: `folder` has no config.json.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; save the model there first.")
    written = []
    for source in model_code_files():
        _write_anew(folder / source.name, source.read_bytes())
        written.append(folder / source.name)
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["custom_pipelines"] = {**config.get("custom_pipelines", {}), TASK: CUSTOM_PIPELINE}
    # As transformers writes config.json: sorted keys, two-space indent.
    _write_anew(config_file, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    written.append(config_file)
    return written


def _write_anew(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)  # replaces a symlink itself, not its target


__all__ = ["MODEL_CODE_DIR", "copy_model_code", "model_code_files"]
