"""The real huggingface_hub / transformers clients, in fresh subprocesses, against tests/hub_server.py."""

from __future__ import annotations

import hashlib
import http.client
import os

import pytest

from tests.hub_server import LoopbackHub
from tests.hubtools import run_hub_python

BOB = "hf_bob_token"



@pytest.fixture
def hub(tmp_path):
    """A hub where every file is uploaded "regular" (base64 in the commit): works with Xet enabled."""
    with LoopbackHub(tmp_path / "hub", tokens={"hf_test_token": "alice", BOB: "bob"}) as server:
        yield server


@pytest.fixture
def lfs_hub(tmp_path):
    """A hub that asks for Git LFS above 1 MB: clients must run with HF_HUB_DISABLE_XET=1."""
    with LoopbackHub(tmp_path / "hub", tokens={"hf_test_token": "alice"}, lfs_threshold=1_000_000) as server:
        yield server


def _write_tree(root, files: dict[str, bytes]):
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _read_tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_upload_folder_then_download_in_fresh_process(hub, tmp_path):
    files = {"config.json": b'{"a": 1}', "README.md": b"---\nlicense: mit\n---\n# demo\n",
             "weights/part.bin": os.urandom(20_000), "empty.txt": b""}
    folder = _write_tree(tmp_path / "folder", files)
    up = run_hub_python(hub, """
        from huggingface_hub import HfApi
        api = HfApi()
        url = api.create_repo("demo")  # no namespace: the hub takes it from the token
        assert api.create_repo("alice/demo", exist_ok=True) == url  # 409 is tolerated, url read from it
        emit(api.upload_folder(repo_id="alice/demo", folder_path=ARGS["folder"]).oid)
    """, hf_home=tmp_path / "hf_up", args={"folder": str(folder)}).result
    assert hub.head("alice/demo") == up
    assert not any("/info/lfs/" in path or "xet" in path for _, path in hub.requests)

    down = run_hub_python(hub, """
        from huggingface_hub import hf_hub_download, snapshot_download, HfApi
        emit(snapshot_download("alice/demo"))
        emit(hf_hub_download("alice/demo", "weights/part.bin"))
        emit(sorted(HfApi().list_repo_files("alice/demo")))
    """, hf_home=tmp_path / "hf_down")
    snapshot, single, listed = down.results
    assert up in snapshot and _read_tree(tmp_path / snapshot) == files
    assert open(single, "rb").read() == files["weights/part.bin"]
    assert listed == sorted(files)


def test_lfs_upload_and_download_without_xet(lfs_hub, tmp_path):
    big = os.urandom(1_500_000)
    folder = _write_tree(tmp_path / "folder", {"big.bin": big, "small.txt": b"small"})
    run_hub_python(lfs_hub, """
        from huggingface_hub import HfApi
        HfApi().create_repo("alice/big")
        HfApi().upload_folder(repo_id="alice/big", folder_path=ARGS["folder"])
    """, hf_home=tmp_path / "hf_up", args={"folder": str(folder)}, disable_xet=True)
    sha = hashlib.sha256(big).hexdigest()
    paths = [p for _, p in lfs_hub.requests]
    assert "/alice/big.git/info/lfs/objects/batch" in paths
    assert f"/cdn/upload/{sha}" in paths and "/alice/big.git/info/lfs/objects/verify" in paths
    assert lfs_hub.file_bytes("alice/big", "big.bin") == big

    lfs_hub.clear_requests()
    run = run_hub_python(lfs_hub, """
        from huggingface_hub import hf_hub_download, HfApi
        emit(hf_hub_download("alice/big", "big.bin"))
        emit([(f.path, f.lfs.sha256 if f.lfs else None) for f in HfApi().list_repo_tree("alice/big")])
    """, hf_home=tmp_path / "hf_down", disable_xet=True)
    assert open(run.results[0], "rb").read() == big
    assert sorted(map(tuple, run.results[1])) == [("big.bin", sha), ("small.txt", None)]
    assert ("GET", f"/cdn/blob/{sha}") in lfs_hub.requests  # the 302 was followed to the CDN port


def test_second_commit_and_branch_keep_every_revision_readable(hub, tmp_path):
    up = run_hub_python(hub, """
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo("alice/rev")
        emit(api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id="alice/rev").oid)
        emit(api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id="alice/rev").oid)
        api.create_branch("alice/rev", branch="dev")
        emit(api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id="alice/rev", revision="dev").oid)
        refs = api.list_repo_refs("alice/rev")
        emit({b.name: b.target_commit for b in refs.branches})
    """, hf_home=tmp_path / "hf_up")
    first, second, dev, branches = up.results
    assert len({first, second, dev}) == 3
    assert branches == {"main": second, "dev": dev}
    assert hub.history("alice/rev")[:2] == [second, first]

    down = run_hub_python(hub, """
        from huggingface_hub import hf_hub_download
        for rev in ARGS["revs"]:
            emit(open(hf_hub_download("alice/rev", "f.txt", revision=rev)).read())
    """, hf_home=tmp_path / "hf_down", args={"revs": [first, "main", second, "dev"]})
    assert down.results == ["v1", "v2", "v2", "dev"]


def test_private_repo_is_invisible_without_its_owners_token(hub, tmp_path):
    hub.create_repo("alice/secret", private=True, files={"f.txt": b"secret"})
    code = """
        from huggingface_hub import hf_hub_download, HfApi
        emit(outcome(lambda: open(hf_hub_download("alice/secret", "f.txt")).read()))
        emit(outcome(lambda: HfApi().model_info("alice/secret").private))
    """
    hidden = ["RepositoryNotFoundError(404)"] * 2
    assert run_hub_python(hub, code, hf_home=tmp_path / "anon", token=None).results == hidden
    assert run_hub_python(hub, code, hf_home=tmp_path / "bob", token=BOB).results == hidden
    assert run_hub_python(hub, code, hf_home=tmp_path / "alice").results == ["secret", True]


def test_wrong_token_gets_401_from_the_client(hub, tmp_path):
    hub.create_repo("alice/public", files={"f.txt": b"x"})
    run = run_hub_python(hub, """
        from huggingface_hub import HfApi
        api = HfApi()
        emit(outcome(lambda: api.upload_file(path_or_fileobj=b"y", path_in_repo="f.txt", repo_id="alice/public")))
        emit(outcome(lambda: api.whoami()))
        emit(outcome(lambda: api.create_repo("alice/new")))
    """, hf_home=tmp_path / "hf", token="hf_wrong")
    assert run.results == ["HfHubHTTPError(401)"] * 3
    assert len(hub.history("alice/public")) == 2  # initial commit + seed: nothing was written
    assert "hf_wrong" not in repr(hub.requests)


def test_missing_repo_revision_and_file_map_to_client_errors(hub, tmp_path):
    hub.create_repo("alice/there", files={"f.txt": b"x"})
    run = run_hub_python(hub, """
        from huggingface_hub import hf_hub_download, HfApi
        emit(outcome(lambda: hf_hub_download("alice/nope", "f.txt")))
        emit(outcome(lambda: hf_hub_download("alice/there", "f.txt", revision="no-such-branch")))
        emit(outcome(lambda: hf_hub_download("alice/there", "missing.txt")))
        emit(outcome(lambda: HfApi().model_info("alice/there", revision="0" * 40)))
    """, hf_home=tmp_path / "hf")
    assert run.results == ["RepositoryNotFoundError(404)", "RevisionNotFoundError(404)",
                           "RemoteEntryNotFoundError(404)", "RevisionNotFoundError(404)"]


def test_offline_reload_from_cache_sends_no_request(hub, tmp_path):
    hub.create_repo("alice/cached", files={"config.json": b"{}", "sub/w.bin": b"\0" * 100})
    code = """
        from huggingface_hub import hf_hub_download, snapshot_download
        emit(snapshot_download("alice/cached"))
        emit(hf_hub_download("alice/cached", "sub/w.bin"))
    """
    online = run_hub_python(hub, code, hf_home=tmp_path / "hf").results
    hub.clear_requests()
    offline = run_hub_python(hub, code, hf_home=tmp_path / "hf", offline=True).results
    assert offline == online
    assert hub.requests == []


def test_dropped_commit_raises_leaves_no_commit_and_retry_succeeds(hub, tmp_path):
    before = hub.create_repo("alice/flaky", files={"f.txt": b"old"})
    hub.fail_next(kind="drop", path_contains="/commit/")
    run = run_hub_python(hub, """
        from huggingface_hub import HfApi
        api = HfApi()
        emit(outcome(lambda: api.upload_file(path_or_fileobj=b"new" * 10_000, path_in_repo="f.txt",
                                             repo_id="alice/flaky")))
        emit(api.model_info("alice/flaky").sha)  # nothing was committed by the cut request
        emit(api.upload_file(path_or_fileobj=b"new" * 10_000, path_in_repo="f.txt", repo_id="alice/flaky").oid)
    """, hf_home=tmp_path / "hf")
    error, sha_after_drop, retried = run.results
    assert isinstance(error, str) and error.endswith("(None)"), error  # a connection error, no HTTP answer
    assert sha_after_drop == before
    assert hub.history("alice/flaky") == [retried, before, hub.history("alice/flaky")[-1]]
    assert hub.file_bytes("alice/flaky", "f.txt") == b"new" * 10_000
    assert [m for m, p in hub.requests if "/commit/" in p] == ["POST", "POST"]


def test_injected_server_error_is_one_shot(hub, tmp_path):
    hub.create_repo("alice/err", files={"f.txt": b"x"})
    hub.fail_next(kind="500", path_contains="/api/models/alice/err", method="GET")
    run = run_hub_python(hub, """
        from huggingface_hub import HfApi
        emit(outcome(lambda: HfApi().model_info("alice/err").id))
        emit(outcome(lambda: HfApi().model_info("alice/err").id))
    """, hf_home=tmp_path / "hf")
    assert run.results == ["HfHubHTTPError(500)", "alice/err"]


def test_resolve_supports_range_and_redirects_lfs_to_the_cdn(lfs_hub):
    lfs_hub.create_repo("alice/r", files={"small.txt": b"0123456789", "big.bin": b"B" * 1_000_000})
    port = int(lfs_hub.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/alice/r/resolve/main/small.txt", headers={"Range": "bytes=2-4"})
    resp = conn.getresponse()
    assert (resp.status, resp.read(), resp.headers["Content-Range"]) == (206, b"234", "bytes 2-4/10")
    assert resp.headers["X-Repo-Commit"] == lfs_hub.head("alice/r")
    conn.request("HEAD", "/alice/r/resolve/main/big.bin")
    resp = conn.getresponse()
    resp.read()
    sha = hashlib.sha256(b"B" * 1_000_000).hexdigest()
    assert resp.status == 302 and resp.headers["Location"] == f"{lfs_hub.cdn_url}/cdn/blob/{sha}"
    assert (resp.headers["X-Linked-Etag"], resp.headers["X-Linked-Size"]) == (f'"{sha}"', "1000000")
    conn.request("GET", "/alice/r/resolve/main/missing", headers={"Range": "bytes=0-"})
    resp = conn.getresponse()
    resp.read()
    assert (resp.status, resp.headers["X-Error-Code"]) == (404, "EntryNotFound")
    conn.close()


def test_transformers_push_to_hub_and_from_pretrained_roundtrip(hub, tmp_path):
    digest = """
        import hashlib
        def digest(model):
            h = hashlib.sha256()
            for name, tensor in sorted(model.state_dict().items()):
                h.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
            return h.hexdigest()
    """
    pushed = run_hub_python(hub, digest + """
        import torch
        from transformers import ViTConfig, ViTForImageClassification
        torch.manual_seed(0)
        labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
        config = ViTConfig(image_size=16, patch_size=8, num_channels=1, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, id2label=dict(enumerate(labels)),
                           label2id={l: i for i, l in enumerate(labels)})
        model = ViTForImageClassification(config)
        emit(model.push_to_hub("tiny-fer-vit").oid)
        emit(digest(model))
    """, hf_home=tmp_path / "hf_up")
    commit, weights = pushed.results
    assert hub.head("alice/tiny-fer-vit") == commit
    loaded = run_hub_python(hub, digest + """
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained("alice/tiny-fer-vit")
        emit(digest(model))
        emit(model.config.id2label[3])
    """, hf_home=tmp_path / "hf_down")
    assert loaded.results == [weights, "happy"]


def test_datasets_push_to_hub_and_load_dataset_roundtrip(tmp_path):
    # `datasets` deletes its parquet shards after preupload, so the shards must go through LFS:
    # "regular" mode would send their (deleted) content inside the commit and fail.
    with LoopbackHub(tmp_path / "hub", tokens={"hf_test_token": "alice"}, lfs_threshold=1) as hub:
        run_hub_python(hub, """
            import datasets
            rows = {"label": [0, 3, 6], "path": ["a.png", "b.png", "c.png"]}
            datasets.Dataset.from_dict(rows).push_to_hub("alice/ds")
        """, hf_home=tmp_path / "hf_up", disable_xet=True)
        run = run_hub_python(hub, """
            import datasets
            emit(datasets.load_dataset("alice/ds", split="train").to_dict())
        """, hf_home=tmp_path / "hf_down", disable_xet=True)
    assert run.result == {"label": [0, 3, 6], "path": ["a.png", "b.png", "c.png"]}


def test_space_create_upload_info_variables_and_download(hub, tmp_path):
    card = b"---\ntitle: Demo\nsdk: gradio\nsdk_version: 6.31.0\napp_file: app.py\nmodels:\n- alice/model\n---\n# demo\n"
    files = {"README.md": card, "app.py": b"print('hi')\n", "pkg/__init__.py": b""}
    folder = _write_tree(tmp_path / "space", files)
    up = run_hub_python(hub, """
        from huggingface_hub import HfApi
        api = HfApi()
        emit(outcome(lambda: api.create_repo("alice/demo", repo_type="space", space_sdk="gradio")))
        emit(api.create_repo("alice/demo", repo_type="space", space_sdk="gradio", exist_ok=True))
        emit(api.upload_folder(repo_id="alice/demo", repo_type="space", folder_path=ARGS["folder"]).oid)
        info = api.space_info("alice/demo")
        emit([info.id, info.sdk, info.models, info.card_data.sdk_version, info.card_data.app_file,
              sorted(s.rfilename for s in info.siblings)])
        api.add_space_variable("alice/demo", "MODEL", "alice/model", description="the model")
        api.add_space_variable("alice/demo", "REV", "v1")
        emit({k: v.value for k, v in api.delete_space_variable("alice/demo", "REV").items()})
        emit(outcome(lambda: api.add_space_variable("alice/demo", "BAD-KEY", "x")))
        emit(outcome(lambda: api.model_info("alice/demo")))  # a Space is not a model
    """, hf_home=tmp_path / "hf_up", args={"folder": str(folder)})
    url, url_again, commit, info, variables, bad_key, as_model = up.results
    assert url == url_again == f"{hub.url}/spaces/alice/demo"
    assert hub.repo_ids("space") == ["alice/demo"] and hub.repo_ids("model") == []
    assert hub.head("alice/demo", repo_type="space") == commit
    assert info == ["alice/demo", "gradio", ["alice/model"], "6.31.0", "app.py", sorted(files)]
    assert variables == {"MODEL": "alice/model"} == hub.space_variables("alice/demo")
    assert bad_key == "BadRequestError(400)" and as_model == "RepositoryNotFoundError(404)"

    down = run_hub_python(hub, """
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        emit(snapshot_download("alice/demo", repo_type="space"))
        emit(open(hf_hub_download("alice/demo", "app.py", repo_type="space")).read())
        emit({k: v.value for k, v in HfApi().get_space_variables("alice/demo").items()})
        emit(outcome(lambda: snapshot_download("alice/demo")))  # no model repo of that name
    """, hf_home=tmp_path / "hf_down")
    snapshot, app, read_variables, as_model = down.results
    assert _read_tree(tmp_path / snapshot) == files and app == "print('hi')\n"
    assert read_variables == {"MODEL": "alice/model"}
    assert as_model.startswith("RepositoryNotFoundError")


def test_space_needs_an_sdk_and_its_owners_token(hub, tmp_path):
    hub.create_repo("alice/space", repo_type="space", files={"app.py": b""})
    port = int(hub.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/repos/create", body=b'{"name": "nosdk", "type": "space"}',
                 headers={"Authorization": "Bearer hf_test_token", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and b"sdk" in resp.read()
    conn.close()
    run = run_hub_python(hub, """
        from huggingface_hub import HfApi
        api = HfApi()
        emit(outcome(lambda: api.add_space_variable("alice/space", "K", "v")))
        emit(outcome(lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="app.py", repo_id="alice/space",
                                             repo_type="space")))
        emit(outcome(lambda: api.get_space_variables("alice/space")))
    """, hf_home=tmp_path / "bob", token=BOB)
    assert run.results == ["HfHubHTTPError(403)", "HfHubHTTPError(403)", {}]
    assert hub.repo_ids("space") == ["alice/space"] and hub.space_variables("alice/space") == {}
