"""The demo as a Space, end to end against tests/hub_server.py's LoopbackHub.

A model is pushed with `python -m fer_hf push`, a Space serving it with `python -m fer_hf push-space`; then
the Space's files are downloaded into a fresh folder and its app.py is started there as the Spaces runtime
starts it (`python app.py`, the Space's variables as environment variables, GRADIO_SERVER_NAME/PORT) in a
process that cannot import this clone, with HF_ENDPOINT at the loopback Hub, and headless Chromium uploads
a real photo. Set FER_HF_SCREENSHOTS=DIR to keep a screenshot of it (docs/space.png is one).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard

from fer_hf import FER2013_LABELS
from tests import freshpython
from tests.apptools import PHOTOS, free_port, stop, wait_until_up
from tests.conftest import ROOT
from tests.hub_server import LoopbackHub
from tests.hubtools import hub_env, run_hub_python
from tests.test_app_browser import (CHROMIUM, CHROMIUM_ARGS, WAIT_BOUND_MS, screenshot, sync_playwright, top_label_and_score,
                                   wait_for_text)

TOKEN = "hf_aliceSpaceToken"
MODEL, SPACE = "alice/fer-cnn", "alice/fer-demo"


def _fer_hf(hub, *args, hf_home: Path) -> subprocess.CompletedProcess:
    """`python -m fer_hf ARGS` from the clone, as alice, in a fresh process with its own HF_HOME."""
    return freshpython.run(["-m", "fer_hf", *args], cwd=ROOT, timeout=300, env=hub_env(hub, hf_home, token=TOKEN))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LoopbackHub(tmp_path_factory.mktemp("hub"), tokens={TOKEN: "alice"}) as server:
        yield server


@pytest.fixture(scope="module")
def model_sha(hub, tmp_path_factory) -> str:
    """The bundled FER-2013 model, pushed as alice/fer-cnn (from a copy: a push rewrites the folder's card)."""
    tmp = tmp_path_factory.mktemp("model")
    folder = shutil.copytree(ROOT / "models" / "fer2013-cnn", tmp / "fer2013-cnn")
    pushed = _fer_hf(hub, "push", folder, MODEL, hf_home=tmp / "hf")
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    return hub.head(MODEL)


def test_push_space_with_an_unreachable_model_creates_nothing(hub, model_sha, tmp_path):
    hub.clear_requests()
    for model, revision, reason in (("alice/no-such-model", None, "no such repository"),
                                    (MODEL, "no-such-branch", "no such revision")):
        args = ["push-space", SPACE, "--model", model] + (["--revision", revision] if revision else [])
        run = _fer_hf(hub, *args, hf_home=tmp_path / "hf")
        assert run.returncode == 1 and run.stdout == ""
        assert f"cannot read the model {model}" in run.stderr and reason in run.stderr, run.stderr
        assert "Nothing was created" in run.stderr and "Traceback" not in run.stderr
    assert hub.repo_ids("space") == []
    assert not [path for method, path in hub.requests if method != "GET"]  # no create, no variable, no commit


@pytest.mark.skipif(sync_playwright is None or not os.access(CHROMIUM, os.X_OK), reason="needs playwright and Chromium")
def test_space_files_run_from_a_fresh_folder_and_label_a_photo(hub, model_sha, tmp_path):
    pushed = _fer_hf(hub, "push-space", SPACE, "--model", MODEL, "--revision", model_sha, hf_home=tmp_path / "hf")
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    assert hub.head(SPACE, repo_type="space") in pushed.stdout
    variables = hub.space_variables(SPACE)
    assert variables == {"FER_HF_MODEL": MODEL, "FER_HF_REVISION": model_sha}

    # The Space's files, as the Hub serves them, in a fresh folder.
    space = tmp_path / "space"
    run_hub_python(hub, """
        from huggingface_hub import snapshot_download
        snapshot_download(ARGS["space"], repo_type="space", local_dir=ARGS["dir"])
    """, hf_home=tmp_path / "hf_download", token=None, args={"space": SPACE, "dir": str(space)})
    card = SpaceCard.load(space / "README.md").data
    assert (card.sdk, card.app_file, card.models) == ("gradio", "app.py", [MODEL])
    assert card.sdk_version == importlib.metadata.version("gradio")
    assert len(card.short_description) <= 60 and card.emoji and card.colorFrom and card.colorTo
    assert (space / "app.py").read_bytes() == (ROOT / "app.py").read_bytes()
    # requirements.txt parses, and this environment (the one the tests pass in) satisfies every line of it.
    check = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-q", "-r",
                            space / "requirements.txt"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    # The app's process: no HF_* of ours, no PYTHONPATH; `import fer_hf` finds the Space's copy, and
    # from any other folder nothing: this clone is out of reach.
    port = free_port()
    env = hub_env(hub, tmp_path / "hf_space", token=None, extra={
        "PYTHONPATH": "", **variables, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio")})
    assert "HF_HUB_OFFLINE" not in env
    find = "import importlib.util; spec = importlib.util.find_spec('fer_hf'); print(spec and spec.origin)"
    for cwd, origin in ((space, str(space / "fer_hf" / "__init__.py")), (tmp_path / "hf_download", "None")):
        found = subprocess.run([sys.executable, "-c", find], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        assert found.stdout.strip() == origin, found.stdout + found.stderr

    log_path = tmp_path / "space.log"
    app = freshpython.start(["app.py"], cwd=space, env=env, stdout=log_path)  # as `python app.py` there
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            wait_until_up(url, app, timeout=180)
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{log_path.read_text()[-4000:]}")
        assert any(path.startswith(f"/api/models/{MODEL}/revision/{model_sha}") for _, path in hub.requests)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_BOUND_MS)  # waits for events; the bound stops a hung test
            page.goto(url, wait_until="load")  # not "networkidle": Gradio keeps a connection open
            page.locator("input[type=file]").first.set_input_files(str(PHOTOS / "happy_man.jpg"))
            assert "Found 1 face" in wait_for_text(page, "#status", "Found")
            label, score = top_label_and_score(page, "#scores")
            header = page.locator("body").inner_text()
            screenshot(page, "space.png")
            # The in-browser tab loads the model's files from the Hub cache (served by the app): ready means the
            # runtime, the detector and the model's ONNX file all loaded (this browser has no camera).
            page.get_by_role("tab", name="Live, in your browser").click()
            page.wait_for_function("window.ferLive && (window.ferLive.ready || window.ferLive.error)")
            live = page.evaluate("window.ferLive")
            browser.close()
    finally:
        stop(app)
    assert label in FER2013_LABELS and 0 < score <= 100
    assert f"Model {MODEL} at {model_sha}" in header
    assert live["ready"], live["error"]
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-4000:]


def test_push_space_again_without_a_revision_follows_main(hub, model_sha, tmp_path):
    space = "alice/fer-demo-main"
    for revision in (["--revision", model_sha], []):
        run = _fer_hf(hub, "push-space", space, "--model", MODEL, *revision, hf_home=tmp_path / "hf")
        assert run.returncode == 0, run.stderr[-4000:]
    assert hub.space_variables(space) == {"FER_HF_MODEL": MODEL}  # the pin is gone: the app loads main
    assert len(hub.history(space, repo_type="space")) == 3  # the initial commit and one per push
    readme = hub.file_bytes(space, "README.md", repo_type="space").decode()
    assert model_sha not in readme and f"--model {MODEL}`" in readme


def test_push_space_with_a_feedback_repo_gives_the_token_as_a_secret_only(hub, model_sha, tmp_path):
    space, feedback = "alice/fer-demo-feedback", "alice/fer-feedback"
    run = _fer_hf(hub, "push-space", space, "--model", MODEL, "--feedback_repo", feedback, hf_home=tmp_path / "hf")
    assert run.returncode == 0, run.stderr[-4000:]
    assert hub.space_variables(space) == {"FER_HF_MODEL": MODEL, "FER_HF_FEEDBACK_REPO": feedback}
    assert hub.space_secrets(space) == {"HF_TOKEN": TOKEN}
    assert hub.is_private(feedback, repo_type="dataset")  # created at the push: a repo it cannot write to fails it
    for path in hub.files(space, repo_type="space"):  # the token is in no file of the Space
        assert TOKEN.encode() not in hub.file_bytes(space, path, repo_type="space"), path
    assert TOKEN not in run.stdout + run.stderr
    # Pushed again without it, the demo has no corrections (the secret stays: a private model may need it).
    run = _fer_hf(hub, "push-space", space, "--model", MODEL, hf_home=tmp_path / "hf")
    assert run.returncode == 0, run.stderr[-4000:]
    assert hub.space_variables(space) == {"FER_HF_MODEL": MODEL}


def test_push_static_space_needs_the_models_onnx_file(hub, model_sha, tmp_path):
    # The same model without its onnx/ folder: the static page could not run it, so nothing is created.
    folder = shutil.copytree(ROOT / "models" / "fer2013-cnn", tmp_path / "no-onnx", ignore=shutil.ignore_patterns("onnx"))
    pushed = _fer_hf(hub, "push", folder, "alice/fer-no-onnx", hf_home=tmp_path / "hf")
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    run = _fer_hf(hub, "push-space", "alice/fer-live-no-onnx", "--model", "alice/fer-no-onnx", "--static",
                  hf_home=tmp_path / "hf")
    assert run.returncode == 1 and "has no onnx/model_quantized.onnx" in run.stderr, run.stderr
    assert "Nothing was created" in run.stderr and "Traceback" not in run.stderr
    assert "alice/fer-live-no-onnx" not in hub.repo_ids("space")
    # A static Space has no server to take corrections.
    run = _fer_hf(hub, "push-space", "alice/fer-live-feedback", "--model", MODEL, "--static", "--feedback_repo",
                  "alice/fer-feedback-static", hf_home=tmp_path / "hf")
    assert run.returncode == 1 and "--feedback_repo is for the Gradio Space" in run.stderr, run.stderr
    assert "alice/fer-live-feedback" not in hub.repo_ids("space")
    assert "alice/fer-feedback-static" not in hub.repo_ids("dataset")
