"""`python ARGS` as a fresh interpreter would run it, forked from a server that has imported what reads no
Hugging Face setting.

huggingface_hub, datasets and transformers read HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import, so a
run against a loopback Hub needs them imported after its environment is set: they cannot come from
conftest's preloaded process. torch, NumPy, Pillow, pyarrow, pandas and what those three libraries import
beneath them (torch's compiler and distributed modules, SymPy, SciPy, scikit-learn, HTTP clients) read none of
them and take 6-7 s of CPU to import; the server imports those once (with OMP_NUM_THREADS=1, as the Hub runs set it) and forks a child for
each run, which sets the run's environment, working directory and sys.path (as `python` builds it from
PYTHONPATH) before anything else is imported. Each run is still a new process with its own exit status,
stdout and stderr; it ends as an interpreter does (threads joined, atexit functions run, streams flushed)
without tearing down its modules.

    run(["-m", "fer_hf", "push", folder, repo], env=env, cwd=ROOT, timeout=600)  # a CompletedProcess
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRELOADED = ["torch", "numpy", "PIL.Image", "pyarrow", "pandas",
             # What transformers, datasets and huggingface_hub import beneath them, which reads no Hugging Face
             # setting either: about 3 s of CPU a run that `import fer_hf` no longer spends.
             "torch._dynamo", "torch._decomp", "torch.distributed.tensor", "torch.fx.experimental.symbolic_shapes",
             "sympy", "scipy.optimize", "sklearn.metrics", "safetensors.torch", "tokenizers", "fsspec", "requests",
             "httpx", "anyio", "trio", "filelock", "multiprocess", "regex", "yaml", "jinja2", "rich.console",
             "matplotlib.pyplot"]  # train.py and evaluate draw their plots with it
# Modules that read Hugging Face settings when imported: the server must not have them.
READS_HF_SETTINGS = ("huggingface_hub", "datasets", "transformers", "fer_hf")

_SERVER = r'''
import json, os, sys
for name in sys.argv[1:]:
    try:
        __import__(name)
    except ImportError:  # one a given install lacks is imported by the run that needs it, if any
        pass
late = sorted({m.split(".")[0] for m in sys.modules} & set(READS))
if late:
    raise SystemExit(f"the fork server imported {late}, which read Hugging Face settings at import")
BASE_PATH = sys.path[1:]  # without '' (this `-c`'s own first entry)


def serve():
    """Forks a child per request line; replies with its pid, then its exit status once it has ended."""
    for line in sys.stdin.buffer:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return job
        os.write(1, f"{pid}\n".encode())
        os.write(1, f"{os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}\n".encode())
    raise SystemExit(0)


job = serve()
del serve
# The child: what `python ARGS` would have before running anything.
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
os.close(devnull)
for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
    if fd == 2 and path == job["stdout"]:  # merged, as with stderr=subprocess.STDOUT
        os.dup2(1, 2)
        continue
    opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(opened, fd)
    os.close(opened)
sys.stdin = open(0, closefd=False)
sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
os.environ.clear()
os.environ.update(job["env"])
os.chdir(job["cwd"])
args = job["args"]
first = "" if args[0] == "-c" else os.getcwd() if args[0] == "-m" else os.path.dirname(os.path.abspath(args[0]))
sys.path[:] = [first, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)), *BASE_PATH]
import atexit, builtins, runpy, threading, types
code = 0
try:
    if args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        main = types.ModuleType("__main__")
        main.__builtins__ = builtins
        sys.modules["__main__"] = main
        exec(compile(args[1], "<string>", "exec"), main.__dict__)
    elif args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy._run_module_as_main(args[1])
    else:
        sys.argv = list(args)
        runpy.run_path(args[0], run_name="__main__")
except SystemExit as end:  # as the interpreter reads it: None is 0, anything but a number is printed and is 1
    if end.code is None or isinstance(end.code, int):
        code = end.code or 0
    else:
        print(end.code, file=sys.stderr)
        code = 1
except BaseException:
    sys.excepthook(*sys.exc_info())
    code = 1
# An interpreter's exit, but for tearing down the modules: in a forked child that touches every inherited
# page (over a second with torch loaded). Threads are joined and atexit functions run as at any exit; what a
# program leaves unflushed without closing it would be lost, which a test would see.
threading._shutdown()
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
'''


class _Server:
    """One fork server per test process, started on first use; one run at a time."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.busy = threading.Lock()

    def start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
            env.pop("PYTHONPATH", None)
            env["OMP_NUM_THREADS"] = "1"  # OpenMP reads it when torch loads it; the Hub runs all set 1
            code = f"READS = {list(READS_HF_SETTINGS)!r}\n" + _SERVER
            self.process = subprocess.Popen([sys.executable, "-c", code, *PRELOADED], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, env=env, cwd=tempfile.gettempdir(), bufsize=0)
            atexit.register(self.process.kill)
        return self.process

    def run(self, args: list[str], env: dict[str, str], cwd: str, timeout: float,
            merge: bool) -> subprocess.CompletedProcess:
        server = self.start()
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "stdout"
            err = out if merge else Path(folder) / "stderr"
            job = {"args": args, "env": env, "cwd": cwd, "stdout": str(out), "stderr": str(err)}
            server.stdin.write((json.dumps(job) + "\n").encode())
            deadline = time.monotonic() + timeout
            pid = int(_read_line(server.stdout, deadline + 60))
            try:
                status = int(_read_line(server.stdout, deadline))
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                _read_line(server.stdout, time.monotonic() + 60)
                raise subprocess.TimeoutExpired(["python", *args], timeout) from None
            return subprocess.CompletedProcess(["python", *args], status, out.read_text(errors="replace"),
                                               None if merge else err.read_text(errors="replace"))


def _read_line(pipe, deadline: float) -> str:
    """One line from an unbuffered pipe, waiting until `deadline` (time.monotonic) at most."""
    line = b""
    while not line.endswith(b"\n"):
        if not select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise subprocess.TimeoutExpired("fork server", deadline)
        byte = pipe.read(1)
        if not byte:
            raise RuntimeError("the fork server ended")
        line += byte
    return line.decode().strip()


_server = _Server()


def run(args, *, env: dict[str, str], cwd, timeout: float = 600, merge: bool = False) -> subprocess.CompletedProcess:
    """Runs `python ARGS` (`-c CODE ...`, `-m MODULE ...` or `SCRIPT ...`) with exactly `env`, in `cwd`; stdout and
    stderr as text, apart or (`merge`) both in stdout. A run asked for while another is under way, or with another
    OMP_NUM_THREADS than the server's 1 (OpenMP read it when the server loaded torch), starts a plain fresh
    interpreter."""
    args = [str(a) for a in args]
    if env.get("OMP_NUM_THREADS") != "1" or not _server.busy.acquire(blocking=False):
        return subprocess.run([sys.executable, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True, timeout=timeout)
    try:
        return _server.run(args, env, str(cwd), timeout, merge)
    finally:
        _server.busy.release()
