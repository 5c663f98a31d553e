"""Run Python snippets in fresh processes (tests/freshpython.py) whose Hugging Face clients talk to a LoopbackHub.

`huggingface_hub` reads `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_OFFLINE` and `HF_HUB_DISABLE_XET` once, at
import, so each scenario runs in its own interpreter with its own environment and cache.

Example:
    >>> run = run_hub_python(hub, '''
    ...     from huggingface_hub import hf_hub_download
    ...     emit(open(hf_hub_download(ARGS["repo"], "config.json")).read())
    ... ''', hf_home=tmp_path / "hf", args={"repo": "alice/demo"})
    >>> run.result
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tests import freshpython

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOKEN = "hf_test_token"  # the token the test hubs give to user "alice"
_MARKER = "@@HUBTOOLS_RESULT@@"

# Defines, inside the snippet: `ARGS` (the caller's `args`), `emit(obj)` (reports a result) and
# `outcome(call)` (call's value, or "ErrorClass(http_status)" if it raised, e.g. "RepositoryNotFoundError(404)").
_PRELUDE = f"""\
import json as _json, os as _os
ARGS = _json.loads(_os.environ.pop("HUBTOOLS_ARGS", "{{}}"))
def emit(obj):
    print({_MARKER!r} + _json.dumps(obj), flush=True)
def outcome(call):
    try:
        return call()
    except Exception as err:
        return f"{{type(err).__name__}}({{getattr(getattr(err, 'response', None), 'status_code', None)}})"
"""


@dataclass
class HubRun:
    """Outcome of `run_hub_python`: exit code, output, and every object the snippet passed to `emit`."""

    returncode: int
    stdout: str
    stderr: str
    results: list = field(default_factory=list)

    @property
    def result(self):
        """The last emitted object (None if nothing was emitted)."""
        return self.results[-1] if self.results else None


def hub_env(hub, hf_home, *, token: str | None = DEFAULT_TOKEN, offline: bool = False,
            disable_xet: bool = False, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a client subprocess talking to `hub`, with its own cache under `hf_home`.

    Args:
        hub: A started `LoopbackHub`.
        hf_home: Directory for `HF_HOME` (cache and stored token); use a fresh one for an empty cache.
        token: Value of `HF_TOKEN`; None sends no token at all.
        offline: Set `HF_HUB_OFFLINE=1`.
        disable_xet: Set `HF_HUB_DISABLE_XET=1` (needed when the hub answers "lfs" on preupload).
        extra: More variables, applied last.
    """
    # Drop inherited HF_* settings and proxies: a stray HF_TOKEN or proxy would leak into the test.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and "proxy" not in k.lower()}
    env.update({
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",  # the machine is small and shared
        "TOKENIZERS_PARALLELISM": "false",
    })
    if token is not None:
        env["HF_TOKEN"] = token
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if disable_xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    env.update(extra or {})
    return env


def run_hub_python(hub, code: str, *, hf_home, args: dict | None = None, check: bool = True,
                   timeout: float = 120, **env_options) -> HubRun:
    """Runs `code` in a fresh `python` whose Hub clients talk to `hub`.

    Args:
        hub: A started `LoopbackHub`.
        code: Snippet (dedented automatically). It sees `ARGS` (a copy of `args`), `emit(obj)`, which
            reports a JSON-serializable object back as `HubRun.results`, and `outcome(call)`, which
            returns `call()` or, if it raised, a string like "RepositoryNotFoundError(404)".
        hf_home: Directory for `HF_HOME`; created if missing; also the working directory.
        args: JSON-serializable values for the snippet.
        check: Raise AssertionError (with the output) if the snippet exits non-zero.
        timeout: Seconds before the subprocess is killed.
        **env_options: Passed to `hub_env` (token, offline, disable_xet, extra).

    Returns:
        The `HubRun`.
    """
    Path(hf_home).mkdir(parents=True, exist_ok=True)
    env = hub_env(hub, hf_home, **env_options)
    env["HUBTOOLS_ARGS"] = json.dumps(args or {})
    proc = freshpython.run(["-c", _PRELUDE + textwrap.dedent(code)], env=env, cwd=hf_home, timeout=timeout)
    results = [json.loads(line[len(_MARKER):]) for line in proc.stdout.splitlines() if line.startswith(_MARKER)]
    run = HubRun(proc.returncode, proc.stdout, proc.stderr, results)
    if check and proc.returncode != 0:
        raise AssertionError(f"hub snippet failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return run
