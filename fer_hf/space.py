"""The demo as a Hugging Face Space: `push_space` makes a Gradio Space that serves a Hub model by its id,
or (static=True) a static Space whose page labels the webcam in the visitor's browser.

The Space holds:

- `README.md`: front matter the Hub builds the Space from (`sdk: gradio`, `sdk_version`, `app_file`,
  `models`, ...) and what the Space is (`space_template/README.md`).
- `app.py`: the demo of this clone, unchanged.
- `fer_hf/`: this package's source, beside `app.py`, where `import fer_hf` finds it. Not a wheel: the
  Spaces builder installs `requirements.txt` before it copies the other files, so a wheel named there
  would not exist yet, and a wheel fetched by URL from the Space fails once the Space is private.
- `requirements.txt`: the package's dependencies, torch from its CPU index.

The model is named by the Space's variables `FER_HF_MODEL` and `FER_HF_REVISION`, which the Spaces runtime
passes to `app.py` as environment variables: the owner can switch models without a commit.

A static Space (`sdk: static`) holds fer_hf/web: the in-browser page, the vendored onnxruntime-web and the
face detector, and `fer-live.json` naming the Hub endpoint, the model and its revision; the page loads the
model's config.json, preprocessor_config.json and int8 ONNX file from the model repo's resolve URLs.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, SpaceCard, SpaceCardData, constants, get_token
from huggingface_hub.utils import filter_repo_objects

from .hub import explain_hub_error

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent  # a clone: app.py and requirements.txt beside the package
TEMPLATE_PATH = PACKAGE_DIR / "space_template" / "README.md"
STATIC_TEMPLATE_PATH = PACKAGE_DIR / "space_template" / "STATIC_README.md"
WEB_DIR = PACKAGE_DIR / "web"
# The files of the model that the static page loads by their resolve URLs.
STATIC_MODEL_FILES = ("config.json", "preprocessor_config.json", "onnx/model_quantized.onnx")
# The package files that are not part of the package as pip would install it.
PACKAGE_IGNORE = ["__pycache__/*", "*.pyc", ".*", "*/.*"]
# torch's CPU wheels: a Space on CPU hardware does not need the several GB of CUDA libraries that the
# default Linux wheel of the pinned torch brings.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SHORT_DESCRIPTION = "The expression of every face in a photo or a webcam stream"  # the Hub allows 60 characters
STATIC_DESCRIPTION = "Facial expressions of a webcam, labelled in your browser"


class ModelUnreachableError(LookupError):
    """The model a Space is to serve cannot be read from the Hub; nothing was created."""


def check_model(api: HfApi, model: str, revision: str | None = None, needs: tuple[str, ...] = ("config.json",)) -> str:
    """Checks that `model` (at `revision`) is a model repo this token can read, with the files `needs`.

    Returns:
        The commit sha that `revision` (None: main) points at now.

    Raises:
        ModelUnreachableError: with the reason (no such repo or revision, no token for a private repo,
            no connection, not a transformers model).
    """
    at = f" at revision {revision}" if revision else ""
    try:
        info = api.model_info(model, revision=revision)
    except Exception as error:  # a wrong id or revision, a private repo, no connection
        raise ModelUnreachableError(f"cannot read the model {model}{at} on the Hub ({constants.ENDPOINT}): "
                                    f"{explain_hub_error(error)}") from error
    files = {sibling.rfilename for sibling in info.siblings or []}
    if "config.json" not in files:
        raise ModelUnreachableError(f"{model}{at} has no config.json: not a model the demo can load "
                                    f"(it holds {', '.join(sorted(files)) or 'no files'}).")
    missing = [name for name in needs if name not in files]
    if missing:
        raise ModelUnreachableError(f"{model}{at} has no {', '.join(missing)}, which the in-browser page loads "
                                    "(`python -m fer_hf export` writes the ONNX files; push them with the model).")
    return info.sha


def space_requirements(requirements: Path = PROJECT_ROOT / "requirements.txt") -> str:
    """The Space's requirements.txt: the package's own dependencies, torch from its CPU index."""
    lines = [line.strip() for line in requirements.read_text().splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    return "\n".join([
        "# fer-hf's dependencies; the package itself is the fer_hf/ folder beside app.py.",
        f"--extra-index-url {TORCH_CPU_INDEX}",
        *pins,
    ]) + "\n"


def build_space_card(space_id: str, model: str, revision: str | None = None, static: bool = False) -> SpaceCard:
    """The Space's README.md: its front matter (the Hub's Space configuration) and what it is.

    static: the card of the static Space (`sdk: static`, the page index.html) instead of the Gradio demo's.
    """
    sdk = {"sdk": "static", "app_file": "index.html"} if static else {
        "sdk": "gradio",
        "sdk_version": importlib.metadata.version("gradio"),  # the Gradio the demo is tested with
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "app_file": "app.py",
    }
    card_data = SpaceCardData(
        title="Facial expressions",
        **sdk,
        license="apache-2.0",
        models=[model],
        tags=["facial-expression-recognition", "fer-hf"],
        short_description=STATIC_DESCRIPTION if static else SHORT_DESCRIPTION,
        emoji="🙂",
        colorFrom="indigo",
        colorTo="blue",
        pinned=False,
    )
    return SpaceCard.from_template(card_data, template_path=str(STATIC_TEMPLATE_PATH if static else TEMPLATE_PATH),
                                   space_id=space_id, model=model, revision=revision,
                                   model_url=f"{constants.ENDPOINT}/{model}")


def stage_space(folder: Path, space_id: str, model: str, revision: str | None = None) -> None:
    """Writes the Space's files into `folder`: README.md, app.py, requirements.txt and fer_hf/.

    Raises:
        FileNotFoundError: not run from a clone (no app.py or requirements.txt beside the package).
    """
    app, requirements = PROJECT_ROOT / "app.py", PROJECT_ROOT / "requirements.txt"
    for path in (app, requirements):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: push-space ships the demo and the package of a clone of "
                                    "fer-hf; run it from a clone.")
    build_space_card(space_id, model, revision).save(folder / "README.md")
    shutil.copyfile(app, folder / "app.py")
    (folder / "requirements.txt").write_text(space_requirements(requirements))
    files = sorted(p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*") if p.is_file())
    for name in filter_repo_objects(files, ignore_patterns=PACKAGE_IGNORE):
        target = folder / "fer_hf" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / name, target)  # follows links: model_card.md is one


def stage_static_space(folder: Path, space_id: str, model: str, revision: str | None = None) -> None:
    """Writes a static Space's files into `folder`: README.md, fer_hf/web's page and files, fer-live.json."""
    build_space_card(space_id, model, revision, static=True).save(folder / "README.md")
    files = sorted(p.relative_to(WEB_DIR).as_posix() for p in WEB_DIR.rglob("*") if p.is_file())
    for name in filter_repo_objects(files, ignore_patterns=[*PACKAGE_IGNORE, "README.md"]):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(WEB_DIR / name, target)
    settings = {"endpoint": constants.ENDPOINT, "model": model, "revision": revision or "main"}
    (folder / "fer-live.json").write_text(json.dumps(settings, indent=2) + "\n")


def push_space(
    space_id: str,
    model: str,
    *,
    revision: str | None = None,
    static: bool = False,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Update the demo with fer-hf",
    feedback_repo: str | None = None,
) -> CommitInfo:
    """Creates or updates a Gradio Space that serves the Hub model `model`, in one commit.

    With `static`, a static Space instead: the in-browser page alone (stage_static_space), no variables; the
    model must then have its int8 ONNX file, and be public for visitors' browsers to load it.

    The model is checked first: if it cannot be read, nothing is created. Then the Space is created if
    missing (an existing one keeps its visibility), its variables FER_HF_MODEL and FER_HF_REVISION are
    set (FER_HF_REVISION removed when no revision is given), and its files are uploaded; fer_hf files
    that the package no longer has are deleted from the Space.

    Args:
        space_id: `namespace/name` of the Space.
        model: Hub repo id of the model it serves.
        revision: The model's branch, tag or commit the Space loads; None: main, as it is at each start.
        static: Push the in-browser page as a static Space (`sdk: static`) instead of the Gradio demo.
        private: Create the Space private.
        token: Hub token; None: `HF_TOKEN` or the `hf auth login` token.
        commit_message: The commit's summary.
        feedback_repo: A dataset repo (`namespace/name`) the demo's visitors may send corrections to
            (app.py's --feedback_repo): set as the variable FER_HF_FEEDBACK_REPO, and the token as the
            Space's secret HF_TOKEN, which the Space needs to write there. None: the variable is removed.

    Returns:
        The Space's commit.

    Raises:
        ModelUnreachableError: the model cannot be read (nothing was created).
        FileNotFoundError: not run from a clone of fer-hf.
        ValueError: `static` with a `feedback_repo` (nothing was created).
        huggingface_hub errors and connection errors: see `explain_hub_error`.
    """
    api = HfApi(token=token, library_name="fer-hf")
    if static and feedback_repo:
        raise ValueError("a static Space has no server to take corrections: --feedback_repo is for the Gradio Space.")
    model_sha = check_model(api, model, revision, needs=STATIC_MODEL_FILES if static else ("config.json",))
    if feedback_repo:  # here, not at the Space's start: a repo this token cannot write to fails the push
        feedback_repo = api.create_repo(feedback_repo, repo_type="dataset", private=True, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory(prefix="fer-hf-space-") as staging:
        if static:
            stage_static_space(Path(staging), space_id, model, revision)
            repo_id = api.create_repo(space_id, repo_type="space", space_sdk="static", private=private,
                                      exist_ok=True).repo_id
            # The Gradio demo's files, if the Space held it before, go: the page is all there is.
            commit = api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=staging,
                                       commit_message=commit_message,
                                       delete_patterns=["app.py", "requirements.txt", "fer_hf/*", "vendor/*"])
            logger.info("Pushed the static Space %s for %s (%s): commit %s", repo_id, model, model_sha, commit.oid)
            return commit
        stage_space(Path(staging), space_id, model, revision)  # before creating: a clone is needed
        repo_id = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private,
                                  exist_ok=True).repo_id
        api.add_space_variable(repo_id, "FER_HF_MODEL", model, description="Hub id of the model the demo serves")
        if revision:
            api.add_space_variable(repo_id, "FER_HF_REVISION", revision, description="the model's revision")
        elif "FER_HF_REVISION" in api.get_space_variables(repo_id):
            api.delete_space_variable(repo_id, "FER_HF_REVISION")
        if feedback_repo:
            # A secret, never a file or a variable: the Hub does not show it, not even to the owner.
            api.add_space_secret(repo_id, "HF_TOKEN", token or get_token(),
                                 description="writes the demo's corrections to FER_HF_FEEDBACK_REPO")
            api.add_space_variable(repo_id, "FER_HF_FEEDBACK_REPO", feedback_repo,
                                   description="private dataset repo of the corrections visitors send")
        elif "FER_HF_FEEDBACK_REPO" in api.get_space_variables(repo_id):
            api.delete_space_variable(repo_id, "FER_HF_FEEDBACK_REPO")
        commit = api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=staging,
                                   commit_message=commit_message, delete_patterns=["fer_hf/*"])
    logger.info("Pushed the Space %s serving %s (%s): commit %s", repo_id, model, model_sha, commit.oid)
    return commit


__all__ = ["ModelUnreachableError", "build_space_card", "check_model", "push_space", "space_requirements", "stage_space",
           "stage_static_space"]
