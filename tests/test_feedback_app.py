"""Corrections in the demo (fer_hf/demo/feedback.py): `python app.py --feedback_repo` against the loopback Hub,
called with gradio_client and used in headless Chromium; the demo without the option, and with a repo it cannot
write to.

The browser test serves the bundled models/fer2013-cnn (its screenshot shows real predictions); the others a
random "tiny" FER CNN. Which label a model predicts is not checked: what is kept is.
Set FER_HF_SCREENSHOTS=DIR to keep a screenshot of the correction sent (docs/feedback.png is one).
"""

from __future__ import annotations

import os

import pytest

from fer_hf import FER2013_LABELS
from tests.apptools import PHOTOS, running_app, save_tiny_model
from tests.conftest import ROOT
from tests.hub_server import LoopbackHub
from tests.hubtools import DEFAULT_TOKEN, hub_env, run_hub_python
from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS, screenshot, sync_playwright, wait_for_text

REPO = "alice/fer-feedback"
BOB = "hf_bob_token"
GROUP = PHOTOS / "happy_three_women.jpg"  # three faces


@pytest.fixture
def hub(tmp_path):
    with LoopbackHub(tmp_path / "hub", tokens={DEFAULT_TOKEN: "alice", BOB: "bob"}) as server:
        yield server


def test_without_the_option_nothing_about_feedback_shows_or_runs(tmp_path):
    import app

    demo = app.build_demo(str(save_tiny_model(tmp_path / "model")))
    config = demo.get_config_file()
    assert "feedback" not in str(config).lower()
    assert not (tmp_path / "hf").exists()


@pytest.mark.skipif(sync_playwright is None or not os.access(CHROMIUM, os.X_OK), reason="needs playwright and Chromium")
def test_corrections_from_the_api_and_the_browser_reach_the_dataset(hub, tmp_path):
    from gradio_client import Client, handle_file

    env = {**hub_env(hub, tmp_path / "hf"), "HF_DATASETS_OFFLINE": "0"}
    with running_app(tmp_path, ROOT / "models" / "fer2013-cnn", args=["--feedback_repo", REPO], env=env,
                     stop_timeout=120) as url:
        assert hub.is_private(REPO, repo_type="dataset")  # created at start, with its card
        # Plain HTTP on loopback: no certificate to verify (tests/test_app_load.py says why it is off).
        client = Client(url, verbose=False, download_files=str(tmp_path / "client"), ssl_verify=False)
        assert "/feedback" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        labels = ["angry", "surprise", "neutral"]
        ids = [client.predict(handle_file(GROUP), face, label, api_name="/feedback") for face, label in enumerate(labels)]
        assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
        # Bad input: a clear message, nothing kept, and the demo goes on.
        for face, label, message in ((0, "bored", "'bored' is not one of the labels: angry, disgust"),
                                     (3, "happy", "There is no face 3 here: this photo has 3 faces, 0 (the largest) to 2.")):
            with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
                client.predict(handle_file(GROUP), face, label, api_name="/feedback")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="load")
            consent = page.locator("#feedback-consent").inner_text()
            assert f"private dataset {REPO}" in consent and "Never the photo" in consent  # before anything is sent
            page.locator("input[type=file]").first.set_input_files(str(GROUP))
            wait_for_text(page, "#status", "Found 3 faces")
            page.locator("#picker label").nth(1).click()  # face 2
            page.locator("#feedback-label input").click()
            page.get_by_role("option", name="fear", exact=True).click()
            page.locator("#feedback-send").click()
            status = wait_for_text(page, "#feedback-status", "Submission id")
            assert "face 2 is kept as fear" in status
            browser_id = status.split("Submission id")[1].split()[0].strip("`:")
            screenshot(page, "feedback.png")
            browser.close()
        assert not any(path.startswith("data/") for path in hub.files(REPO, repo_type="dataset"))  # pushed at exit

    # Stopped (SIGTERM): the exit push sent the four rows in one new parquet file.
    run = run_hub_python(hub, """
        from datasets import load_dataset
        data = load_dataset(ARGS["repo"], split="train")
        emit({"names": data.features["label"].names, "predicted": data.features["predicted"].names,
              "rows": data.remove_columns("image").to_list(), "image": [data[0]["image"].size, data[0]["image"].mode]})
    """, hf_home=tmp_path / "reader", args={"repo": REPO}, extra={"HF_DATASETS_OFFLINE": "0"})
    kept = run.result
    assert kept["names"] == kept["predicted"] == FER2013_LABELS  # the model's labels, in its id order
    assert [row["submission_id"] for row in kept["rows"]] == [*ids, browser_id]
    assert [FER2013_LABELS[row["label"]] for row in kept["rows"]] == [*labels, "fear"]
    columns = {"label", "predicted", "scores", "model", "model_revision", "time", "submission_id"}
    assert all(set(row) == columns for row in kept["rows"])  # and the face image: no photo, no position, no name
    assert all(len(row["scores"]) == 7 and abs(sum(row["scores"]) - 1) < 1e-4 for row in kept["rows"])
    assert all(row["model"] == "fer2013-cnn" for row in kept["rows"])
    assert kept["image"] == [[48, 48], "L"]
    assert len([path for path in hub.files(REPO, repo_type="dataset") if path.startswith("data/")]) == 1


def test_a_repo_it_cannot_write_to_turns_corrections_off_and_the_demo_works(hub, tmp_path):
    hub.create_repo(REPO, repo_type="dataset", private=True)
    model = save_tiny_model(tmp_path / "model")
    run = run_hub_python(hub, """
        import app
        from fer_hf.demo import FaceDemo
        from fer_hf.demo.feedback import FeedbackTab
        from fer_hf.faces import FaceExpressionRecognizer
        from fer_hf.hub import load_classifier

        demo = app.build_demo(ARGS["model"], feedback_repo=ARGS["repo"])  # starts: the demo does not need the repo
        recognizer = FaceExpressionRecognizer(*load_classifier(ARGS["model"]))
        tab = FeedbackTab(recognizer, ARGS["repo"], model="model")
        emit({"problem": tab.problem, "shown": tab.problem in str(demo.get_config_file()),
              "send": tab.send(ARGS["photo"], 0, "happy"),
              "photo": FaceDemo(recognizer).analyze(ARGS["photo"])[3]})
    """, hf_home=tmp_path / "hf", token=BOB, args={"model": str(model), "repo": REPO, "photo": str(GROUP)})
    result = run.result
    assert result["problem"].startswith(f"Corrections are off: the dataset {REPO} cannot be used (")
    assert "403" in result["problem"] or "rights" in result["problem"], result["problem"]
    assert result["shown"]
    assert result["send"] == f"**Nothing was kept.** {result['problem']}"
    assert "Found **3 faces**" in result["photo"]
    assert "Traceback" not in run.stderr
