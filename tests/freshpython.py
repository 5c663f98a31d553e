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
without tearing down its modules. Runs may overlap: `start` gives a handle like subprocess.Popen's (an app
server the test stops with SIGTERM), `run` waits for the run's end.

    run(["-m", "fer_hf", "push", folder, repo], env=env, cwd=ROOT, timeout=600)  # a CompletedProcess
    start(["app.py", "--port", "7861"], env=env, cwd=ROOT, stdout=log)  # poll(), wait(), terminate(), kill()
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PRELOADED = ["torch", "numpy", "PIL.Image", "pyarrow", "pandas",
             # What transformers, datasets and huggingface_hub import beneath them, which reads no Hugging Face
             # setting either: about 3 s of CPU a run that `import fer_hf` no longer spends.
             "torch._dynamo", "torch._decomp", "torch.distributed.tensor", "torch.fx.experimental.symbolic_shapes",
             "sympy", "scipy.optimize", "sklearn.metrics", "safetensors.torch", "tokenizers", "fsspec", "requests",
             "httpx", "anyio", "trio", "filelock", "multiprocess", "regex", "yaml", "jinja2", "rich.console",
             "matplotlib.pyplot",  # train.py and evaluate draw their plots with it
             # What Gradio imports beneath it, for app.py (1.8 s of CPU a start).
             "fastapi", "fastapi.routing", "pydantic", "starlette.applications", "starlette.routing", "uvicorn",
             "orjson", "markdown_it", "typer", "tomlkit", "semantic_version", "python_multipart", "brotli", "groovy",
             "aiofiles"]
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
    """Forks a child per request line and answers `pid ID PID`; `exit ID STATUS` once that child has ended. Runs
    overlap (an app server runs while its test makes other runs); the loop reaps ended children between reads."""
    import select
    children, pending = {}, b""
    while True:
        if select.select([0], [], [], 0.02 if children else None)[0]:
            data = os.read(0, 1 << 16)
            if not data:  # the test process has ended
                raise SystemExit(0)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                job = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    return job
                children[pid] = job["id"]
                os.write(1, f"pid {job['id']} {pid}\n".encode())
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            os.write(1, f"exit {children.pop(pid)} {os.waitstatus_to_exitcode(status)}\n".encode())


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
    """One fork server per test process, started on first use; a thread reads its answers."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.requests = threading.Lock()  # one request line written at a time
        self.answers = threading.Condition()
        self.pids: dict[int, int] = {}  # job id -> pid
        self.ended: dict[int, int] = {}  # job id -> exit status
        self.jobs = itertools.count()

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
            env.pop("PYTHONPATH", None)
            env["OMP_NUM_THREADS"] = "1"  # OpenMP reads it when torch loads it; the Hub runs all set 1
            code = f"READS = {list(READS_HF_SETTINGS)!r}\n" + _SERVER
            self.process = subprocess.Popen([sys.executable, "-c", code, *PRELOADED], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, env=env, cwd=tempfile.gettempdir(), bufsize=0)
            atexit.register(self.process.kill)
            threading.Thread(target=self._read_answers, args=(self.process,), daemon=True).start()
        return self.process

    def _read_answers(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            kind, *numbers = line.decode(errors="replace").split()
            if kind not in ("pid", "exit") or len(numbers) != 2:  # a preloaded library's stray print
                continue
            job, value = numbers
            with self.answers:
                (self.pids if kind == "pid" else self.ended)[int(job)] = int(value)
                self.answers.notify_all()
        with self.answers:  # the server has ended: so have the runs it would have reported
            self.ended.update({job: -signal.SIGKILL for job in self.pids if job not in self.ended})
            self.answers.notify_all()

    def start(self, args: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str) -> ForkedProcess:
        with self.requests:
            server = self._start()
            job = next(self.jobs)
            request = {"id": job, "args": args, "env": env, "cwd": cwd, "stdout": stdout, "stderr": stderr}
            server.stdin.write((json.dumps(request) + "\n").encode())
        with self.answers:
            # The first run waits for the server's imports too; the bound only stops a hung server.
            if not self.answers.wait_for(lambda: job in self.pids or server.poll() is not None, timeout=600):
                raise RuntimeError("the fork server did not start the run within 600 s")
            if job not in self.pids:
                raise RuntimeError("the fork server ended")
            return ForkedProcess(self, job, self.pids[job], ["python", *args])


class ForkedProcess:
    """A run of the fork server: the part of subprocess.Popen that the tests use."""

    def __init__(self, server: _Server, job: int, pid: int, args: list[str]) -> None:
        self._server, self._job, self.pid, self.args = server, job, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        with self._server.answers:
            self.returncode = self._server.ended.get(self._job)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._server.answers:
            if not self._server.answers.wait_for(lambda: self._job in self._server.ended, timeout):
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = self._server.ended[self._job]
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not yet reaped, so the pid is still this run's
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_server = _Server()


def start(args, *, env: dict[str, str], cwd, stdout, stderr=None) -> ForkedProcess | subprocess.Popen:
    """Starts `python ARGS` (`-c CODE ...`, `-m MODULE ...` or `SCRIPT ...`) with exactly `env`, in `cwd`, not
    waited for: its stdout to the file `stdout`, its stderr to the file `stderr` (None: with stdout). A run with
    another OMP_NUM_THREADS than the server's 1 (OpenMP read it when the server loaded torch) gets a plain
    fresh interpreter."""
    args = [str(a) for a in args]
    if env.get("OMP_NUM_THREADS") != "1":
        with open(stdout, "w") as out, open(stderr or os.devnull, "w") as err:
            return subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT if stderr is None else err)
    for path in (stdout, stderr or stdout):
        open(path, "a").close()  # there from the start, as with Popen, for a test that reads it while the run runs
    return _server.start(args, env, str(cwd), str(stdout), str(stderr or stdout))


def run(args, *, env: dict[str, str], cwd, timeout: float = 600, merge: bool = False) -> subprocess.CompletedProcess:
    """Runs `python ARGS` as `start` does and waits for it; stdout and stderr as text, apart or (`merge`) both in
    stdout."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "stdout"
        err = None if merge else Path(folder) / "stderr"
        process = start(args, env=env, cwd=cwd, stdout=out, stderr=err)
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(60)
            raise subprocess.TimeoutExpired(process.args, timeout) from None
        return subprocess.CompletedProcess(process.args, status, out.read_text(errors="replace"),
                                           None if merge else err.read_text(errors="replace"))
