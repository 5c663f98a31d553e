"""The feedback dataset (fer_hf.feedback) against tests/hub_server.py's LoopbackHub: faults, two writers, training.

Each scheduler runs in a fresh process whose huggingface_hub talks to the loopback Hub (tests/hubtools.py).
The rows are real FER-2013 faces from the fixture, corrected to a label other than the one they carry.
The demo's side (the photo tab, the `feedback` API endpoint, the browser) is in tests/test_feedback_app.py.
"""

from __future__ import annotations

import itertools
import json
import textwrap
import time

import pytest

from fer_hf import FER2013_LABELS
from tests import freshpython
from tests.conftest import FER_FIXTURE_DIR, ROOT
from tests.hub_server import LoopbackHub
from tests.hubtools import DEFAULT_TOKEN, hub_env, run_hub_python

REPO = "alice/fer-feedback"
BOB = "hf_bob_token"

# Defines `scheduler(folder)` (a FeedbackScheduler on ARGS["repo"] that pushes only when told: its first push
# runs at start, the next one in an hour) and `submit(s, n, start)`: n real fixture faces, each corrected.
SETUP = """
import time
from datasets import load_dataset
from fer_hf import FER2013_LABELS
from fer_hf.feedback import FeedbackScheduler, feedback_row

FACES = load_dataset("parquet", data_files=ARGS["fixture"], split="train").select(range(24))

def scheduler(folder, labels=FER2013_LABELS):
    s = FeedbackScheduler(ARGS["repo"], labels, folder=folder, every=60)
    s.trigger().result()  # the start's push, done: from here on it pushes when triggered
    return s

def submit(s, n, start=0):
    ids = []
    for i in range(start, start + n):
        face, truth = FACES[i]["image"], FACES[i]["label"]
        scores = [0.0] * 7
        scores[(truth + 1) % 7] = 1.0
        row = feedback_row(face, FER2013_LABELS[truth], predicted=FER2013_LABELS[(truth + 1) % 7], scores=scores,
                           labels=FER2013_LABELS, model="alice/fer-cnn", model_revision="0" * 40)
        ids.append(s.submit(row))
    return ids
"""


@pytest.fixture
def hub(tmp_path):
    with LoopbackHub(tmp_path / "hub", tokens={DEFAULT_TOKEN: "alice", BOB: "bob"}) as server:
        yield server


def _run(hub, code: str, tmp_path, name: str = "hf", **kwargs):
    args = {"repo": REPO, "fixture": str(FER_FIXTURE_DIR / "train.parquet"), **kwargs.pop("args", {})}
    return run_hub_python(hub, SETUP + textwrap.dedent(code), hf_home=tmp_path / name, args=args, **kwargs)


def _data_files(hub, revision: str = "main") -> dict[str, str]:
    return {path: oid for path, oid in hub.files(REPO, revision, repo_type="dataset").items() if path.startswith("data/")}


def _card() -> bytes:
    from fer_hf.feedback import build_dataset_card

    return str(build_dataset_card(REPO, FER2013_LABELS)).encode()


def _check_append_only(hub) -> None:
    """Every commit of the repo keeps every file of its parent as it was: nothing rewritten or deleted."""
    history = hub.history(REPO, repo_type="dataset")[::-1]
    for parent, child in itertools.pairwise(history):
        before, after = hub.files(REPO, parent, repo_type="dataset"), hub.files(REPO, child, repo_type="dataset")
        assert all(after.get(path) == oid for path, oid in before.items()), (parent, child)


def test_rows_arrive_as_parquet_that_datasets_loads_with_the_model_labels(hub, tmp_path):
    broken = tmp_path / "spool" / "rows" / "broken.json"  # a row file cut short (a full disk, a hand edit)
    broken.parent.mkdir(parents=True)
    broken.write_text('{"image": "iVBO')
    run = _run(hub, """
        s = scheduler(ARGS["folder"])
        ids = submit(s, 3)
        emit({"pending": s.pending, "ids": ids})
        s.trigger().result()
        data = load_dataset(ARGS["repo"], split="train")
        row = data[0]
        emit({"pending": s.pending, "features": str(data.features), "rows": data.remove_columns("image").to_list(), "image": [row["image"].size, row["image"].mode],
              "same_pixels": row["image"].tobytes() == FACES[0]["image"].convert("L").tobytes()})
    """, tmp_path, args={"folder": str(tmp_path / "spool")})
    before, after = run.results
    assert before["pending"] == 3 and after["pending"] == 0
    assert str(FER2013_LABELS) in after["features"] and "ClassLabel" in after["features"]
    assert [row["submission_id"] for row in after["rows"]] == before["ids"]
    assert all(row["predicted"] == (row["label"] + 1) % 7 for row in after["rows"])
    assert after["image"] == [[48, 48], "L"] and after["same_pixels"]
    assert hub.is_private(REPO, repo_type="dataset")
    card = hub.file_bytes(REPO, "README.md", repo_type="dataset").decode()
    assert "class_label" in card and "data/*.parquet" in card and "submission_id" in card
    assert broken.with_suffix(".bad").read_text() == '{"image": "iVBO'  # set aside, not lost, not blocking
    (path,) = _data_files(hub)
    assert path.startswith("data/") and path.endswith(".parquet") and len(path) == len("data/") + 36 + len(".parquet")


def test_a_hub_outage_during_a_push_loses_nothing(hub, tmp_path):
    hub.create_repo(REPO, repo_type="dataset", private=True)
    hub.commit_files(REPO, {"README.md": _card()}, repo_type="dataset")  # so that the next commit is a push
    hub.fail_next("drop", "/commit/", method="POST")  # the connection breaks in the middle of the commit
    run = _run(hub, """
        s = scheduler(ARGS["folder"])
        submit(s, 3)
        failed = outcome(lambda: s.trigger().result())
        emit({"failed": str(failed), "pending": s.pending, "error": s.last_error})
        submit(s, 2, start=3)  # more rows while the Hub is away
        s.trigger().result()
        emit({"pending": s.pending, "error": s.last_error, "rows": len(load_dataset(ARGS["repo"], split="train"))})
    """, tmp_path, args={"folder": str(tmp_path / "spool")})
    down, back = run.results
    assert down["pending"] == 3 and down["error"] and "Error" in down["failed"], down
    assert back == {"pending": 0, "error": None, "rows": 5}
    # The batch made before the outage was pushed under its own name, the later rows in a second file.
    assert len(_data_files(hub)) == 2
    _check_append_only(hub)


def _start(hub, code: str, tmp_path, name: str, **args) -> freshpython.ForkedProcess:
    """SETUP + `code` in a fresh process talking to `hub`, not waited for; stdout in NAME.out, stderr in NAME.log."""
    home = tmp_path / name
    home.mkdir()
    env = hub_env(hub, home)
    env["HUBTOOLS_ARGS"] = json.dumps({"repo": REPO, "fixture": str(FER_FIXTURE_DIR / "train.parquet"), **args})
    prelude = "import json, os\nARGS = json.loads(os.environ.pop('HUBTOOLS_ARGS'))\n"
    return freshpython.start(["-c", prelude + SETUP + textwrap.dedent(code)], env=env, cwd=home,
                             stdout=tmp_path / f"{name}.out", stderr=tmp_path / f"{name}.log")


def _first_line(process, path, timeout: float = 300) -> str:
    """The first line `process` prints to the file `path`, once printed whole; "" if it ends before printing one."""
    deadline = time.monotonic() + timeout
    while "\n" not in path.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    text = path.read_text()  # what it printed before it ended, too
    return text.partition("\n")[0] if "\n" in text else ""


def test_a_process_killed_between_pushes_leaves_its_rows_to_the_next_start(hub, tmp_path):
    folder = str(tmp_path / "spool")
    process = _start(hub, """
        s = scheduler(ARGS["folder"])
        submit(s, 4)
        print("submitted", flush=True)
        time.sleep(600)
    """, tmp_path, "killed", folder=folder)
    try:
        line = _first_line(process, tmp_path / "killed.out")
    finally:
        process.kill()  # SIGKILL: no atexit push
        process.wait()
    assert line == "submitted", (tmp_path / "killed.log").read_text()[-3000:]
    assert _data_files(hub) == {}
    run = _run(hub, """
        s = FeedbackScheduler(ARGS["repo"], FER2013_LABELS, folder=ARGS["folder"], every=60)
        s.trigger().result()  # waits for the start's push (one push at a time)
        emit({"pending": s.pending, "rows": len(load_dataset(ARGS["repo"], split="train"))})
    """, tmp_path, args={"folder": folder})
    assert run.result == {"pending": 0, "rows": 4}


def test_two_processes_writing_to_one_repo_overwrite_nothing(hub, tmp_path):
    # Both use one folder, as two demo processes on one machine do by default; each pushes three times.
    code = """
        s = scheduler(ARGS["folder"])
        for push in range(3):
            submit(s, 2, start=ARGS["start"] + 2 * push)
            s.trigger().result()
        print("done", s.pending, flush=True)
    """
    processes = [_start(hub, code, tmp_path, f"writer{i}", folder=str(tmp_path / "spool"), start=6 * i) for i in range(2)]
    for process in processes:
        process.wait(timeout=300)
    outputs = [(tmp_path / f"writer{i}.out").read_text() for i in range(2)]
    logs = [(tmp_path / f"writer{i}.log").read_text()[-3000:] for i in range(2)]
    assert all(process.returncode == 0 for process in processes), logs
    # Each process's own pushes left nothing of its own behind, but `pending` counts the shared folder, where the
    # other process may just have written rows of its next push: what must hold is that once both have ended (each
    # pushes on exit) nothing is left on disk, every row on the Hub below.
    assert all(output.strip().startswith("done") for output in outputs), outputs
    spool = tmp_path / "spool"
    assert not [*(spool / "rows").glob("*.json"), *(spool / "outbox").glob("*.parquet")], outputs
    _check_append_only(hub)
    run = _run(hub, """
        data = load_dataset(ARGS["repo"], split="train")
        emit(sorted(data["submission_id"]))
    """, tmp_path, name="reader")
    assert len(run.result) == len(set(run.result)) == 12  # every row once
    # A push makes at most one file, and may batch the other process's rows found in the shared folder: between 2
    # files and one per push (each process's start, its three triggered pushes and its exit push), however the
    # two processes' pushes interleave.
    assert 2 <= len(_data_files(hub)) <= 2 * (1 + 3 + 1)


def test_a_repo_of_other_labels_or_without_write_access_is_refused(hub, tmp_path):
    _run(hub, "scheduler(ARGS['folder'])", tmp_path, args={"folder": str(tmp_path / "spool")})
    run = _run(hub, """
        from fer_hf.feedback import FeedbackError
        try:
            FeedbackScheduler(ARGS["repo"], ["happy", "sad"], folder=ARGS["folder"], every=60)
        except FeedbackError as error:
            emit(str(error))
    """, tmp_path, args={"folder": str(tmp_path / "other")})
    assert run.result == (f"The feedback dataset {REPO} holds the labels {FER2013_LABELS}; this model's are "
                          "['happy', 'sad']. Use another repo for this model.")
    run = _run(hub, """
        emit(outcome(lambda: FeedbackScheduler(ARGS["repo"], FER2013_LABELS, folder=ARGS["folder"], every=60)))
    """, tmp_path, name="bob", token=BOB, args={"folder": str(tmp_path / "bob")})
    assert run.result == "HfHubHTTPError(403)"


def test_feedback_report_and_training_with_the_feedback_added(hub, tmp_path):
    _run(hub, """
        s = scheduler(ARGS["folder"])
        submit(s, 10)
        s.trigger().result()
    """, tmp_path, args={"folder": str(tmp_path / "spool")})
    env = hub_env(hub, tmp_path / "hf")
    report = freshpython.run(["-m", "fer_hf", "feedback-report", REPO], cwd=ROOT, env=env, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    print(report.stdout)
    assert report.stdout.startswith(f"{REPO}: 10 corrections of alice/fer-cnn; 0 where the person kept")
    assert "Predicted (rows) -> corrected (columns)" in report.stdout
    for label in FER2013_LABELS:
        assert label in report.stdout
    missing = freshpython.run(["-m", "fer_hf", "feedback-report", "alice/no-such-feedback"], cwd=ROOT, env=env,
                              timeout=300)
    assert missing.returncode == 1 and "cannot load the feedback dataset alice/no-such-feedback" in missing.stderr
    assert "Traceback" not in missing.stderr

    out = tmp_path / "run"
    train = freshpython.run([ROOT / "train.py", "--dataset_name", FER_FIXTURE_DIR, "--model_variant", "tiny",
                             "--per_device_train_batch_size", "32", "--disable_tqdm", "true", "--seed", "0",
                             "--add_train_dataset", REPO, "--add_train_dataset_repeats", "2", "--max_steps", "2",
                             "--max_eval_samples", "16", "--output_dir", out], cwd=ROOT, env=env, timeout=600)
    assert train.returncode == 0, (train.stdout + train.stderr)[-4000:]
    print(train.stderr[-2000:])
    info = json.loads((out / "run_info.json").read_text())
    assert info["splits"]["train"] == 112 + 2 * 10  # the fixture's training faces and the corrections twice
    assert f"--add_train_dataset {REPO}" in info["command"] and info["labels"] == FER2013_LABELS
