"""A loopback Hugging Face Hub for tests: the real `huggingface_hub` / `transformers` clients run against it.

No machine here reaches the real Hub, so tests point `HF_ENDPOINT` at this server. It speaks the part
of the Hub HTTP protocol the official client uses (`../shared/docs/hub-protocol.md`): repos, ndjson
commits, preupload, Git LFS batch upload, resolve (HEAD/GET with ETag and Range), tree, refs,
paths-info and branches; for Spaces also their SDK, card data and variables (it builds and runs none).
Metadata lives in memory; file contents on disk, named by their SHA-256.

It binds 127.0.0.1 only, on two ephemeral ports: the Hub, and a stand-in CDN that takes LFS uploads
and serves LFS downloads. Being another origin is what makes the client treat the Hub's 302 for an
LFS file as a CDN redirect (a HEAD stops there and reads the X-Linked-* headers).

Example:
    >>> with LoopbackHub(tmp_path, tokens={"hf_test_token": "alice"}) as hub:
    ...     run_hub_python(hub, "...", hf_home=tmp_path / "hf")  # tests/hubtools.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # /api/{T}/...
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # file URLs
INVALID_TOKEN = "Invalid credentials in Authorization header"  # exact text the client checks for
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)  # a card's YAML block


def git_blob_oid(data: bytes) -> str:
    """Git blob SHA-1: what the Hub reports as `oid` and `ETag` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answer; `code` goes into `X-Error-Code`, which the client maps to its exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass(frozen=True)
class _File:
    sha256: str  # name of the blob on disk
    git_oid: str
    size: int
    lfs: bool  # committed as an lfsFile: served by a 302 to the CDN


@dataclass
class _Commit:
    sha: str
    parent: str | None
    files: dict[str, _File]
    date: str


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, _Commit] = field(default_factory=dict)  # every commit stays readable by sha
    branches: dict[str, str] = field(default_factory=dict)  # branch -> newest commit sha
    sdk: str | None = None  # a Space's
    variables: dict[str, dict] = field(default_factory=dict)  # a Space's: key -> {value, description?, updatedAt}
    secrets: dict[str, str] = field(default_factory=dict)  # a Space's: key -> value (the API never returns them)


class _Request:
    """One request: unquoted path segments, query, authenticated user and a lazily read body."""

    def __init__(self, handler: BaseHTTPRequestHandler, user: str | None):
        split = urlsplit(handler.path)
        self.handler, self.method, self.user, self.raw_path = handler, handler.command, user, split.path
        # Split before unquoting: revisions and tree paths arrive with "/" encoded as %2F.
        self.parts = [unquote(p) for p in split.path.strip("/").split("/")]
        self.query = parse_qs(split.query)
        self._body: bytes | None = None

    def body(self) -> bytes:
        """The whole body; raises ConnectionError if the client hung up before sending all of it."""
        if self._body is None:
            if self.handler.headers.get("Transfer-Encoding"):
                # The client always sends Content-Length; refuse rather than misread the stream.
                self.handler.close_connection = True
                raise HubError(411, "LoopbackHub needs Content-Length")
            length = int(self.handler.headers.get("Content-Length") or 0)
            self._body = self.handler.rfile.read(length)
            if len(self._body) < length:
                raise ConnectionError("request body cut short")
        return self._body

    def json(self):
        try:
            return json.loads(self.body() or b"{}")
        except ValueError as err:
            raise HubError(400, f"invalid JSON body: {err}") from None

    def flag(self, name: str) -> bool:
        return self.query.get(name, [""])[0].lower() in ("1", "true")


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: request log, fault injection, token lookup, writing the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, format, *args):  # noqa: A002 - keep stderr quiet; the hub has its own log
        pass

    def _handle(self):
        hub: LoopbackHub = self.server.hub  # type: ignore[attr-defined]
        fault = hub._on_request(self.command, self.path)  # logs the path only, never a header
        if fault == "drop":
            # Take half the body so the client is mid-upload, then hang up without answering.
            self.rfile.read(int(self.headers.get("Content-Length") or 0) // 2)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        req = _Request(self, hub._tokens.get(token) if token else None)
        try:
            if fault == "500":
                raise HubError(500, "Internal Error (injected by LoopbackHub.fail_next)")
            if token and req.user is None and not self.server.is_cdn:  # type: ignore[attr-defined]
                raise HubError(401, INVALID_TOKEN)  # the real Hub refuses unknown tokens everywhere
            route = hub._route_cdn if self.server.is_cdn else hub._route  # type: ignore[attr-defined]
            status, body, headers = route(req)
        except HubError as err:
            status, body = err.status, json.dumps({"error": err.message}).encode()
            # Header-safe copy: messages quote client-given paths, which may hold any character.
            safe = err.message.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")
            headers = {"Content-Type": "application/json", "X-Error-Message": safe, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
        except ConnectionError:
            self.close_connection = True  # the client hung up mid-body: nothing was applied
            return
        except Exception as err:  # malformed request or server bug: answer, never leave the client waiting
            # 400, not 500: the client retries 5xx with backoff, which would only slow the failing test down.
            status, body = 400, json.dumps({"error": f"malformed request or LoopbackHub bug: {err!r}"}).encode()
            headers = {"Content-Type": "application/json"}
        try:
            req.body()  # drain an unread body so the next request on this connection parses cleanly
        except ConnectionError:
            self.close_connection = True
            return
        except HubError:
            pass  # unreadable body: body() already marked the connection for closing
        if self.command in ("GET", "HEAD"):
            # As the Hub answers reads, so that a page on another origin (a static Space) can fetch model files.
            headers = {"Access-Control-Allow-Origin": "*", **headers}
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class LoopbackHub:
    """An in-process Hub on 127.0.0.1, used as a context manager.

    Args:
        root_dir: Directory for the blob store (created if missing).
        tokens: Access token -> user name, e.g. `{"hf_test_token": "alice"}`. A user may create and
            write repos in the namespace of its own name.
        lfs_threshold: Files of at least this many bytes get `uploadMode: "lfs"` on preupload.
            `None` (default) answers "regular" for every file, the only mode that works while the
            client uses Xet; with a threshold, run the client with `HF_HUB_DISABLE_XET=1`.
        tree_page_size: Entries per page of a tree listing (further pages via a `Link` header).

    Attributes:
        url: Base URL of the Hub, e.g. `http://127.0.0.1:PORT`: the value for `HF_ENDPOINT`.
        cdn_url: Base URL of the stand-in CDN.
    """

    def __init__(self, root_dir, tokens: dict[str, str] | None = None, *, lfs_threshold: int | None = None,
                 tree_page_size: int = 1000):
        self.blob_dir = Path(root_dir) / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._tokens = dict(tokens or {})
        self.lfs_threshold, self.tree_page_size = lfs_threshold, tree_page_size
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._pending_lfs: set[str] = set()  # oids a batch call announced, awaiting their PUT
        self._faults: list[dict] = []
        self._log: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._servers: list[ThreadingHTTPServer] = []
        self.url = self.cdn_url = ""

    # ------------------------------------------------------------------ test-facing API

    def start(self) -> LoopbackHub:
        """Binds both ports on 127.0.0.1 and serves them from daemon threads; returns self."""
        for is_cdn in (False, True):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.hub, server.is_cdn = self, is_cdn  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, name="loopback-hub", daemon=True).start()
            self._servers.append(server)
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        return self

    def stop(self) -> None:
        """Stops serving and frees both ports."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_token(self, token: str, user: str) -> None:
        """Registers an access token for `user`."""
        self._tokens[token] = user

    def fail_next(self, kind: str = "drop", path_contains: str = "", method: str | None = None, times: int = 1):
        """Makes the next `times` matching requests fail (once by default).

        Args:
            kind: "drop" reads half the body then closes the connection without answering;
                "500" answers an Internal Server Error.
            path_contains: Substring of the request path (with query) to match, e.g. "/commit/".
            method: Only match this HTTP method, if given.
            times: Requests to fail. The client retries some calls (preupload, LFS, the commits of
                `upload_folder`'s pipeline, downloads) with backoff; `create_commit` is not retried.
        """
        if kind not in ("drop", "500"):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._faults.append({"kind": kind, "path": path_contains, "method": method, "times": times})

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Copy of the request log: (method, path with query); CDN paths start with /cdn/."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        """Empties the request log."""
        with self._lock:
            self._log.clear()

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                    files: dict[str, bytes] | None = None) -> str:
        """Creates a repo directly (no HTTP), with `files` committed if given; returns main's sha."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise ValueError(f"{repo_type} repo {repo_id} already exists")
            repo = self._repos[(repo_type, repo_id)] = _Repo(repo_type, repo_id, private)
            sha = self._add_commit(repo, "main", {})
        return self.commit_files(repo_id, files, repo_type=repo_type) if files else sha

    def commit_files(self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "model",
                     branch: str = "main") -> str:
        """Commits `files` directly (LFS from `lfs_threshold` on); returns the new commit sha."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            tree = dict(repo.commits[repo.branches[branch]].files)
            for path, data in files.items():
                tree[path] = self._store(data, self.lfs_threshold is not None and len(data) >= self.lfs_threshold)
            return self._add_commit(repo, branch, tree)

    def head(self, repo_id: str, branch: str = "main", *, repo_type: str = "model") -> str:
        """Commit sha that `branch` points at."""
        with self._lock:
            return self._repos[(repo_type, repo_id)].branches[branch]

    def history(self, repo_id: str, branch: str = "main", *, repo_type: str = "model") -> list[str]:
        """Commit shas reachable from `branch`, newest first (the last one is the initial commit)."""
        with self._lock:
            repo, shas = self._repos[(repo_type, repo_id)], [self.head(repo_id, branch, repo_type=repo_type)]
            while (parent := repo.commits[shas[-1]].parent) is not None:
                shas.append(parent)
            return shas

    def repo_ids(self, repo_type: str | None = None) -> list[str]:
        """Ids of the repos on the hub (only those of `repo_type` if given), sorted."""
        with self._lock:
            return sorted(repo_id for kind, repo_id in self._repos if repo_type in (None, kind))

    def space_variables(self, repo_id: str) -> dict[str, str]:
        """A Space's variables, key -> value: the environment the Spaces runtime would give its app."""
        with self._lock:
            return {key: item["value"] for key, item in self._repos[("space", repo_id)].variables.items()}

    def files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, str]:
        """The files at `revision` (branch or commit sha): path -> git blob oid."""
        with self._lock:
            commit = self._resolve(self._repos[(repo_type, repo_id)], revision)
            return {path: f.git_oid for path, f in commit.files.items()}

    def is_private(self, repo_id: str, *, repo_type: str = "model") -> bool:
        with self._lock:
            return self._repos[(repo_type, repo_id)].private

    def space_secrets(self, repo_id: str) -> dict[str, str]:
        """A Space's secrets, key -> value, as the Spaces runtime would give them to its app (no route reads them)."""
        with self._lock:
            return dict(self._repos[("space", repo_id)].secrets)

    def file_bytes(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bytes:
        """Content of `path` at `revision` (branch or commit sha)."""
        with self._lock:
            commit = self._resolve(self._repos[(repo_type, repo_id)], revision)
        return (self.blob_dir / commit.files[path].sha256).read_bytes()

    # ------------------------------------------------------------------ state

    def _on_request(self, method: str, path: str) -> str | None:
        """Logs a request and returns the kind of fault to inject into it, if any."""
        with self._lock:
            self._log.append((method, path))
            for fault in self._faults:
                if fault["path"] in path and fault["method"] in (None, method):
                    fault["times"] -= 1
                    if fault["times"] <= 0:
                        self._faults.remove(fault)
                    return fault["kind"]
        return None

    def _store(self, data: bytes, lfs: bool) -> _File:
        sha256 = hashlib.sha256(data).hexdigest()
        self._write_blob(sha256, data)
        return _File(sha256, git_blob_oid(data), len(data), lfs)

    def _write_blob(self, sha256: str, data: bytes) -> None:
        target = self.blob_dir / sha256
        if not target.exists():  # write then rename: no reader ever sees half a blob
            tmp = target.with_name(f"{sha256}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)

    def _has_blob(self, oid, size) -> bool:
        """Whether blob `oid` (a client-given SHA-256, checked before it names a file) holds `size` bytes."""
        if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid)):
            raise HubError(400, f"invalid oid {oid!r}")
        blob = self.blob_dir / oid
        return blob.exists() and blob.stat().st_size == size

    def _add_commit(self, repo: _Repo, branch: str, files: dict[str, _File]) -> str:
        parent = repo.branches.get(branch)
        seed = json.dumps([parent, sorted((p, f.git_oid) for p, f in files.items()), time.time_ns()])
        sha = hashlib.sha1(seed.encode()).hexdigest()  # 40 hex, new for every commit
        repo.commits[sha] = _Commit(sha, parent, files, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        repo.branches[branch] = sha
        return sha

    def _repo(self, req: _Request, repo_type: str, repo_id: str, write: bool = False) -> _Repo:
        if write and req.user is None:
            raise HubError(401, "You must be authenticated to write to a repo")
        repo = self._repos.get((repo_type, repo_id))
        owner = repo is not None and repo_id.split("/")[0] == req.user
        if repo is None or (repo.private and not owner):
            # Outsiders cannot tell a private repo from a missing one, as on the real Hub.
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write and not owner:
            raise HubError(403, "You don't have the rights to write to this repo")
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> _Commit:
        revision = revision.removeprefix("refs/heads/")
        sha = repo.branches.get(revision, revision)
        if sha not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    @staticmethod
    def _entry(path: str, f: _File | None) -> dict:
        """A tree / paths-info entry; `f` None means a directory (implied by the paths of its files)."""
        if f is None:
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        return entry

    # ------------------------------------------------------------------ routes

    def _route(self, req: _Request) -> tuple[int, bytes, dict]:
        p, m = req.parts, req.method
        if p[0] == "api":
            if p[1:] == ["repos", "create"] and m == "POST":
                return self._create_repo(req)
            if p[1:] == ["whoami-v2"] and m == "GET":
                if req.user is None:
                    raise HubError(401, "Authorization header is required")
                token = {"displayName": "test", "role": "write"}
                return _json({"type": "user", "name": req.user, "fullname": req.user, "orgs": [],
                              "auth": {"type": "access_token", "accessToken": token}})
            if p[1:] == ["validate-yaml"] and m == "POST":
                return _json({"errors": [], "warnings": []})
            if len(p) >= 4 and p[1] in API_TYPES:
                return self._repo_api(req, API_TYPES[p[1]], f"{p[2]}/{p[3]}", p[4:])
        else:  # file URLs: /{prefix}{ns}/{name}/resolve/... and /{prefix}{ns}/{name}.git/info/lfs/...
            repo_type = {"datasets": "dataset", "spaces": "space"}.get(p[0], "model")
            p = p[1:] if repo_type != "model" else p
            if len(p) == 6 and p[1].endswith(".git") and p[2:5] == ["info", "lfs", "objects"] and m == "POST":
                repo = self._repo(req, repo_type, f"{p[0]}/{p[1][:-4]}", write=True)
                return self._lfs_batch(req, repo) if p[5] == "batch" else self._lfs_verify(req)
            if len(p) >= 5 and p[2] == "resolve" and m in ("GET", "HEAD"):
                return self._resolve_file(req, self._repo(req, repo_type, f"{p[0]}/{p[1]}"), p[3], "/".join(p[4:]))
        raise HubError(404, f"LoopbackHub has no route for {m} {req.raw_path}")

    def _create_repo(self, req: _Request):
        if req.user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        body = req.json()
        namespace = body.get("organization") or req.user
        if namespace != req.user:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        key = (body.get("type") or "model", f"{namespace}/{body['name']}")
        if key[0] == "space" and body.get("sdk") not in SPACE_SDKS:
            raise HubError(400, f"A Space needs an sdk, one of {', '.join(SPACE_SDKS)} (got {body.get('sdk')!r})")
        with self._lock:
            if key in self._repos:  # the client reads "url" from the 409 body when exist_ok=True
                return _json({"error": "You already created this repo", "url": self._repo_url(self._repos[key])}, 409)
            private = bool(body.get("private")) or body.get("visibility") == "private"
            repo = self._repos[key] = _Repo(key[0], key[1], private, sdk=body.get("sdk"))
            self._add_commit(repo, "main", {})  # like the Hub: main exists from the start
        return _json({"url": self._repo_url(repo), "name": repo.repo_id})

    def _repo_api(self, req: _Request, repo_type: str, repo_id: str, rest: list[str]):
        m, what = req.method, rest[0] if rest else ""
        repo = self._repo(req, repo_type, repo_id, write=m != "GET" and what != "paths-info")
        if what in ("", "revision") and m == "GET":
            commit = self._resolve(repo, "/".join(rest[1:]) or "main")
            siblings = [{"rfilename": p, "size": f.size, "blobId": f.git_oid}
                        for p, f in sorted(commit.files.items())]
            info = {"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
                    "private": repo.private, "disabled": False, "gated": False, "tags": [],
                    "lastModified": commit.date, "siblings": siblings}
            if repo.repo_type == "space":  # as space_info reads it: the SDK, and the card's front matter
                card = self._card_data(commit)
                info.update(sdk=repo.sdk, cardData=card, models=(card or {}).get("models"))
            return _json(info)
        if what == "tree" and len(rest) >= 2 and m == "GET":
            return self._tree(req, repo, rest[1], "/".join(rest[2:]).strip("/"))
        if what == "refs" and m == "GET":
            with self._lock:
                branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                            for b, sha in sorted(repo.branches.items())]
            return _json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})
        if what == "paths-info" and len(rest) == 2 and m == "POST":
            commit, body = self._resolve(repo, rest[1]), req.body()
            # The client sends a form (paths=a&paths=b&expand=False), not JSON.
            if "json" in req.handler.headers.get("Content-Type", ""):
                paths = json.loads(body)["paths"]
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            return _json([self._entry(p, commit.files.get(p)) for p in (p.strip("/") for p in paths)
                          if p in commit.files or any(f.startswith(p + "/") for f in commit.files)])
        if what == "preupload" and len(rest) == 2 and m == "POST":
            commit, answers = self._resolve(repo, rest[1]), []
            for item in req.json().get("files", []):
                lfs = self.lfs_threshold is not None and item["size"] >= self.lfs_threshold
                old = commit.files.get(item["path"])
                # An oid equal to the client's local one makes it skip that (unchanged) file.
                oid = None if old is None else (old.sha256 if lfs else old.git_oid)
                answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                                "shouldIgnore": False, "oid": oid})
            return _json({"files": answers})
        if what == "commit" and len(rest) == 2 and m == "POST":
            return self._commit(req, repo, rest[1])
        if what == "branch" and len(rest) >= 2 and m == "POST":
            branch = "/".join(rest[1:])
            with self._lock:
                if branch in repo.branches:
                    raise HubError(409, f"Branch {branch} already exists")
                repo.branches[branch] = self._resolve(repo, req.json().get("startingPoint") or "main").sha
            return _json({})
        if what == "variables" and repo_type == "space" and len(rest) == 1 and m in ("GET", "POST", "DELETE"):
            return self._variables(req, repo)
        if what == "secrets" and repo_type == "space" and len(rest) == 1 and m in ("POST", "DELETE"):
            return self._secrets(req, repo)
        if what in ("xet-write-token", "xet-read-token"):
            raise HubError(501, "LoopbackHub does not speak Xet: use lfs_threshold=None or HF_HUB_DISABLE_XET=1")
        raise HubError(404, f"LoopbackHub has no route for {m} {req.raw_path}")

    def _variables(self, req: _Request, repo: _Repo):
        """A Space's variables: GET lists them, POST {key, value, description?} sets one, DELETE {key} removes one."""
        with self._lock:
            if req.method == "POST":
                body = req.json()
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(body.get("key", ""))) or "value" not in body:
                    raise HubError(400, f"a variable needs a key (a name of letters, digits and _) and a value: {body}")
                item = {"value": str(body["value"]), "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
                if body.get("description") is not None:
                    item["description"] = body["description"]
                repo.variables[body["key"]] = item
            elif req.method == "DELETE":
                repo.variables.pop(req.json().get("key"), None)
            return _json(dict(repo.variables))

    def _secrets(self, req: _Request, repo: _Repo):
        """A Space's secrets: POST {key, value, description?} sets one, DELETE {key} removes one; none is ever listed."""
        body = req.json()
        with self._lock:
            if req.method == "POST":
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(body.get("key", ""))) or "value" not in body:
                    raise HubError(400, "a secret needs a key (a name of letters, digits and _) and a value")
                repo.secrets[body["key"]] = str(body["value"])
            else:
                repo.secrets.pop(body.get("key"), None)
        return _json({})

    def _card_data(self, commit: _Commit) -> dict | None:
        """The YAML front matter of README.md at `commit` (None without a card or front matter)."""
        card = commit.files.get("README.md")
        match = card and FRONT_MATTER.match((self.blob_dir / card.sha256).read_text(errors="replace"))
        try:
            data = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError:  # the real Hub refuses such a card at commit time; here it only has no data
            return None
        return data if isinstance(data, dict) else None

    def _tree(self, req: _Request, repo: _Repo, revision: str, path: str):
        commit = self._resolve(repo, revision)
        base, found = f"{path}/" if path else "", {}
        for file_path, f in commit.files.items():
            if file_path.startswith(base):
                parts = file_path[len(base):].split("/")
                # Without recursion, only the first level: files, and directories implied by deeper files.
                for depth in range(1, (len(parts) if req.flag("recursive") else 1) + 1):
                    sub = base + "/".join(parts[:depth])
                    found[sub] = self._entry(sub, f if depth == len(parts) else None)
        if path and not found:
            raise HubError(404, f"{path} does not exist", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        entries, start = [found[k] for k in sorted(found)], int(req.query.get("cursor", ["0"])[0])
        headers = {}
        if start + self.tree_page_size < len(entries):
            query = {k: v[0] for k, v in req.query.items()} | {"cursor": str(start + self.tree_page_size)}
            headers["Link"] = f'<{self.url}{req.raw_path}?{urlencode(query)}>; rel="next"'
        return _json(entries[start:start + self.tree_page_size], headers=headers)

    def _commit(self, req: _Request, repo: _Repo, revision: str):
        if req.flag("create_pr"):
            raise HubError(400, "LoopbackHub does not support create_pr")
        # The whole body is read and checked before anything changes: a cut upload never commits.
        lines = [json.loads(line) for line in req.body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first ndjson line must be the commit header")
        staged: list[tuple[str, str, _File | None]] = []  # (key, path, new file or None to delete)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "").strip("/")
            if key == "file":
                staged.append((key, path, self._store(base64.b64decode(value["content"]), lfs=False)))
            elif key == "lfsFile":
                oid, size = value.get("oid"), value.get("size")
                if value.get("algo") != "sha256" or not self._has_blob(oid, size):
                    raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
                staged.append((key, path, _File(oid, git_blob_oid((self.blob_dir / oid).read_bytes()), size, True)))
            elif key in ("deletedFile", "deletedFolder"):
                staged.append((key, path, None))
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        branch = revision.removeprefix("refs/heads/")
        with self._lock:  # applied atomically, against the branch head as it is now
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
            base = repo.commits[repo.branches[branch]]
            if lines[0]["value"].get("parentCommit") not in (None, base.sha):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(base.files)
            for key, path, f in staged:
                if f is not None:
                    tree[path] = f
                    continue
                doomed = [p for p in tree if p == path or (key == "deletedFolder" and p.startswith(path + "/"))]
                if not doomed:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del tree[p]
            sha = self._add_commit(repo, branch, tree)
        return _json({"success": True, "commitOid": sha, "commitUrl": f"{self._repo_url(repo)}/commit/{sha}"})

    def _lfs_batch(self, req: _Request, repo: _Repo):
        body = req.json()
        if body.get("operation") != "upload":
            raise HubError(400, "LoopbackHub only takes LFS uploads through the batch API")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if self._has_blob(oid, size):
                objects.append({"oid": oid, "size": size})  # no "actions": already stored
                continue
            with self._lock:
                self._pending_lfs.add(oid)
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{self.cdn_url}/cdn/upload/{oid}"},
                "verify": {"href": f"{self._repo_url(repo)}.git/info/lfs/objects/verify"}}})
        return _json({"transfer": "basic", "objects": objects},
                     headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_verify(self, req: _Request):
        body = req.json()
        if not self._has_blob(body.get("oid"), body.get("size")):
            raise HubError(404, f"LFS object {body.get('oid')} not found")
        return _json({"message": "Everything good"})

    def _resolve_file(self, req: _Request, repo: _Repo, revision: str, path: str):
        commit = self._resolve(repo, revision)
        f = commit.files.get(path)
        if f is None:  # X-Repo-Commit lets the client cache "no such file at this commit"
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{f.git_oid}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            headers.update({"Location": f"{self.cdn_url}/cdn/blob/{f.sha256}", "X-Linked-Etag": f'"{f.sha256}"',
                            "X-Linked-Size": str(f.size)})
            return 302, b"", headers
        return self._ranged(req, f.sha256, headers)

    def _route_cdn(self, req: _Request):
        p, m = req.parts, req.method
        oid = p[2] if len(p) == 3 and p[0] == "cdn" and re.fullmatch(r"[0-9a-f]{64}", p[2]) else None
        if oid and p[1] == "upload" and m == "PUT":  # no auth, like a presigned URL; announced oids only
            with self._lock:
                if oid not in self._pending_lfs:
                    raise HubError(403, f"no LFS upload was announced for {oid}")
            data = req.body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, f"SHA-256 mismatch for {oid}")
            self._write_blob(oid, data)
            with self._lock:
                self._pending_lfs.discard(oid)
            return 200, b"", {"ETag": f'"{oid}"'}
        if oid and p[1] == "blob" and m in ("GET", "HEAD") and (self.blob_dir / oid).exists():
            return self._ranged(req, oid, {"ETag": f'"{oid}"', "Accept-Ranges": "bytes"})
        raise HubError(404, f"LoopbackHub CDN has nothing at {m} {req.raw_path}")

    def _ranged(self, req: _Request, sha256: str, headers: dict):
        """Answers a blob, honouring one `Range: bytes=a-b` (the client uses it to resume)."""
        data = (self.blob_dir / sha256).read_bytes()
        headers = {"Content-Type": "application/octet-stream", **headers}
        spec = req.handler.headers.get("Range", "")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
        if match is None or match.groups() == ("", ""):
            return 200, data, headers
        first, last, size = *match.groups(), len(data)
        start, end = (int(first), int(last or size - 1)) if first else (max(size - int(last), 0), size - 1)
        if start >= size or start > end:
            raise HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
        end = min(end, size - 1)
        return 206, data[start:end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}


def _json(obj, status: int = 200, headers: dict | None = None) -> tuple[int, bytes, dict]:
    return status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
