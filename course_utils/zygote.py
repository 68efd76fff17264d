"""A warm parent for torchrun: every launch forks its torchrun process from one that has already imported torch.

Starting `python -m course_utils.torchrun_driver` costs every launch about 2.8 s here before torchrun does
anything: the interpreter imports torch and torch.distributed from scratch. A notebook that launches fifteen
times pays that fifteen times. On Linux, `course_utils.distributed.launch` instead starts a zygote once per
environment (`serve`, run by the same interpreter with the environment the driver would get), lets it import
torch, torch.distributed and the launcher's own modules, and then asks it to fork one child per torchrun process.
The child turns itself into what a fresh driver would be (its own session, the requested working directory,
environment, arguments and output file) and runs the driver's `main`, which ends with `os._exit`.

The zygote never starts a thread, never touches a GPU and runs no computation, so forking it is as safe as
torchrun's own fork of its workers. It exits when the launcher's end of its input closes (the notebook's kernel
or the test process ended), killing what is still running. `WORKBOOK_NO_ZYGOTE=1` turns it off.

Protocol (JSON lines). The launcher writes requests to the zygote's stdin:
    {"id": 7, "argv": [...driver arguments...], "env": {...}, "cwd": "/path", "log": "/path/to/output"}
and reads from its stdout, in this order for each request:
    {"ready": true}                     once, after the imports
    {"id": 7, "pid": 12345}             the child was forked (or {"id": 7, "error": "..."})
    {"pid": 12345, "returncode": 0}     it ended (negative: killed by that signal), as subprocess reports it
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import sys
import threading
import traceback

from .parallel import LAZY_TORCH_IMPORTS

# -P: nothing from the working folder on sys.path, for the zygote and for torchrun as a program (a grading kernel's
# working folder is the submission's to write in: a numpy.py planted there ran in torchrun's process, and every
# worker forked from it inherited what it did). -P is Python 3.11's; on 3.10 the folder stays on sys.path, as before.
SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []

# Imported at start: what every torchrun process needs. What only some workers need is imported on the first
# request whose script needs it (preload_for), and kept for every later launch: the torch and numpy modules the
# script imports (torch.distributed.optim alone is 1.2 s of CPU here), and LAZY_TORCH_IMPORTS (torch._dynamo,
# 1.7 s), which the first optimizer step, DistributedDataParallel(...) or ZeroRedundancyOptimizer of every worker
# imports. Loaded at start they cost a zygote whose launches never train (a grader's toy, a ring all-reduce) 3 s.
PRELOAD = ("torch", "torch.nn", "torch.nn.functional", "torch.optim", "torch.distributed", "torch.distributed.run",
           "torch.distributed.elastic.multiprocessing.errors", "numpy", "course_utils.distributed",
           "course_utils.torchrun_driver", "course_utils.worker_entry")


def _write(fd: int, message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def worker_script(request: dict) -> str | None:
    """The script a request's workers run (the argument after worker_entry.py, as the driver's working directory
    reads it), or None when the request names none."""
    argv = request.get("argv") or []
    for i, arg in enumerate(argv[:-1]):
        if os.path.basename(str(arg)) == "worker_entry.py":
            return os.path.join(request.get("cwd") or ".", str(argv[i + 1]))
    return None


def preload_for(request: dict, loaded: set[str]) -> None:
    """Before forking for `request`: import, in the zygote, the torch and numpy modules its script imports, and
    LAZY_TORCH_IMPORTS if its workers may use them (course_utils.torchrun_driver.uses_lazy_imports); `loaded`
    holds what earlier requests imported. Whatever fails here is left for the worker to meet."""
    import importlib

    from course_utils import torchrun_driver

    script = worker_script(request)
    if script is None:
        return
    try:
        torchrun_driver.preload_imports(script)
        if not loaded.issuperset(LAZY_TORCH_IMPORTS) and torchrun_driver.uses_lazy_imports(script):
            for name in LAZY_TORCH_IMPORTS:
                importlib.import_module(name)
                loaded.add(name)
    except BaseException:                                       # noqa: BLE001 (the zygote must keep serving)
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()


def _become_driver(request: dict, keep_closed: list[int]) -> None:
    """In the forked child: turn into `python -m course_utils.torchrun_driver *argv` and run it. Never returns."""
    code = 1
    try:
        for fd in keep_closed:                                  # the protocol pipes and the zygote's pidfds
            os.close(fd)
        os.setsid()                                             # its own session, as Popen(start_new_session=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        from course_utils import torchrun_driver

        sys.argv = [torchrun_driver.__file__, *request["argv"]]    # as `python -P -m` (no working folder on sys.path)
        torchrun_driver.main(request["argv"])                   # ends with os._exit(its exit code)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The zygote's loop: import, say ready, then fork on request and report how each child ended."""
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)                        # anything printed during the imports cannot corrupt the protocol
    import importlib

    loaded: set[str] = set()             # what preload_for imported
    for name in PRELOAD:
        importlib.import_module(name)
    os.close(os.pidfd_open(os.getpid()))  # Linux 5.3 or later; otherwise fail here and the launcher does without
    sys.stdout.flush()
    sys.stderr.flush()
    _write(replies, {"ready": True})

    selector = selectors.PollSelector()  # no descriptor of its own for a child to inherit
    selector.register(requests, selectors.EVENT_READ)
    children: dict[int, int] = {}        # pidfd -> pid
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd != requests:                                # a child ended: reap it, report its status
                pid = children.pop(key.fd)
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                _write(replies, {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})
                continue
            data = os.read(requests, 1 << 16)
            if not data:                                          # the launcher is gone: so is everything it ran
                for pid in children.values():
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                os._exit(0)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                preload_for(request, loaded)
                try:
                    pid = os.fork()
                except OSError as err:
                    _write(replies, {"id": request["id"], "error": f"fork failed: {err}"})
                    continue
                if pid == 0:
                    _become_driver(request, [requests, replies, *children])
                pidfd = os.pidfd_open(pid)        # a child that already exited is a zombie until reaped: no race
                children[pidfd] = pid
                selector.register(pidfd, selectors.EVENT_READ)
                _write(replies, {"id": request["id"], "pid": pid})


# ---------------------------------------------------------------------------------------------------------------
# The launcher's side.

DISABLE_ENV = "WORKBOOK_NO_ZYGOTE"        # set to 1 to start every torchrun process as its own program
READY_TIMEOUT = 300.0                     # seconds the zygote may take to import torch (a loaded machine)


class ZygoteUnavailable(RuntimeError):
    """The zygote could not be started or has died; the caller starts the program itself."""


class Child:
    """A process the zygote forked, with the part of Popen's interface that the launcher uses."""

    def __init__(self, zygote: "Zygote", pid: int):
        self._zygote, self.pid, self.returncode = zygote, pid, None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._zygote._exit_status(self.pid, timeout)
        return self.returncode


class Zygote:
    """One running zygote (`serve` in a process of its own), started with `env`, and the thread that reads its replies."""

    def __init__(self, env: dict[str, str]):
        import subprocess
        import tempfile

        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, *SAFE_PATH, "-c", "from course_utils.zygote import serve; serve()"],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        self.owner = os.getpid()
        self._cond = threading.Condition()
        self._send = threading.Lock()
        self._ready, self._dead, self._next_id = False, False, 0
        self._started: dict[int, dict] = {}
        self._exits: dict[int, int] = {}
        self.running: set[int] = set()
        threading.Thread(target=self._read_replies, name="course_utils-zygote", daemon=True).start()
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._dead, READY_TIMEOUT)
            if not self._ready:
                self.close()
                raise ZygoteUnavailable(f"the zygote did not start: {self._stderr_tail()}")

    def _read_replies(self) -> None:
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._cond:
                if "ready" in message:
                    self._ready = True
                elif "id" in message:
                    self._started[message["id"]] = message
                else:
                    self._exits[message["pid"]] = message["returncode"]
                self._cond.notify_all()
        with self._cond:
            self._dead = True
            self._cond.notify_all()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:] or "(no output)"

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    def start(self, argv: list[str], env: dict[str, str], cwd: str, log: str) -> Child:
        """Fork a child that runs `python -m course_utils.torchrun_driver *argv` with this environment and working
        directory, its stdout and stderr appended to the file `log`."""
        with self._send:
            self._next_id += 1
            request = self._next_id
            line = json.dumps({"id": request, "argv": argv, "env": env, "cwd": cwd, "log": log}) + "\n"
            try:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
            except OSError as err:
                raise ZygoteUnavailable(f"the zygote is gone ({err})") from None
        with self._cond:
            self._cond.wait_for(lambda: request in self._started or self._dead, READY_TIMEOUT)
            reply = self._started.pop(request, None)
        if reply is None or "pid" not in reply:
            raise ZygoteUnavailable((reply or {}).get("error") or f"the zygote died: {self._stderr_tail()}")
        self.running.add(reply["pid"])
        return Child(self, reply["pid"])

    def _exit_status(self, pid: int, timeout: float | None) -> int:
        import subprocess

        with self._cond:
            if not self._cond.wait_for(lambda: pid in self._exits or self._dead, timeout):
                raise subprocess.TimeoutExpired(f"torchrun (pid {pid})", timeout)
            if pid not in self._exits:
                raise RuntimeError(f"the zygote that started pid {pid} died, so its exit status is unknown: "
                                   f"{self._stderr_tail()}")
            self.running.discard(pid)
            return self._exits.pop(pid)

    def close(self) -> None:
        """Close its input: the zygote kills anything still running and exits."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()


_ZYGOTES: dict[frozenset, Zygote | None] = {}     # one per environment; None: it could not start, do without
_LOCK = threading.Lock()
KEEP = 2                                          # zygotes kept at once (each holds torch's memory, ~0.3 GB)


def enabled() -> bool:
    return (sys.platform.startswith("linux") and hasattr(os, "pidfd_open")
            and os.environ.get(DISABLE_ENV, "") in ("", "0"))


def zygote_for(env: dict[str, str], ignore: tuple[str, ...] = ()) -> Zygote | None:
    """The zygote started with this environment (keys in `ignore` aside, they are set per child), started on first
    use; None where there is none (disabled, not Linux, or it could not start: then the caller runs programs)."""
    if not enabled():
        return None
    base = {k: v for k, v in env.items() if k not in ignore}
    key = frozenset(base.items())
    with _LOCK:
        zygote = _ZYGOTES.get(key)
        if key in _ZYGOTES and zygote is None:
            return None
        if zygote is not None and zygote.alive and zygote.owner == os.getpid():
            _ZYGOTES[key] = _ZYGOTES.pop(key)                         # most recently used last
            return zygote
        _ZYGOTES.pop(key, None)
        idle = [k for k, z in _ZYGOTES.items() if z is not None and not z.running]     # least recently used first
        while idle and sum(z is not None for z in _ZYGOTES.values()) >= KEEP:       # room for the new one
            _ZYGOTES.pop(idle.pop(0)).close()
        try:
            _ZYGOTES[key] = zygote = Zygote(base)
        except (ZygoteUnavailable, OSError) as err:
            print(f"course_utils: launching without a zygote ({err})", file=sys.stderr)
            _ZYGOTES[key] = zygote = None
        return zygote


