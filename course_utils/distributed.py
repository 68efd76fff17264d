"""Launch torch.distributed worker scripts from a notebook with torchrun, never hanging and never orphaning.

Functions defined in a notebook cannot be pickled into spawned processes, so distributed lessons run worker
*scripts* under `torchrun` (the same command a cluster uses). `launch` adds what a notebook needs: a timeout that
kills the whole process tree, the failing worker's error in the exception, and results that workers write as JSON
(via `report`) collected in rank order.
"""
from __future__ import annotations

import contextlib
import getpass
import inspect
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn

try:
    import fcntl                     # POSIX: lock files that keep two launches off one port
except ImportError:                  # Windows: the port still comes from below the ephemeral range
    fcntl = None

from .processes import kill_tree
from .zygote import SAFE_PATH, ZygoteUnavailable, zygote_for

RESULTS_ENV = "WORKBOOK_RESULTS_DIR"


def backend_for(device_type: str) -> str:
    """The collective backend for a device type: NCCL for CUDA GPUs, gloo otherwise (CPU)."""
    if device_type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device type {device_type!r}")
    return "nccl" if device_type == "cuda" else "gloo"


@dataclass(frozen=True)
class Worker:
    rank: int
    world_size: int
    local_rank: int
    device: "torch.device"  # noqa: F821 (torch is imported lazily: the launcher side does not need it)
    backend: str


def init_worker(device: str | None = None) -> Worker:
    """Called inside a torchrun worker: join the process group with the backend that fits the hardware.

    With `device=None`, each worker gets its own CUDA GPU (NCCL) when the node has one per local process; otherwise
    every worker runs on the CPU with gloo. Nothing else in a worker script needs to change between the two.
    `device="cpu"` keeps the workers on the CPU whatever the node has, and `device="cuda"` requires a GPU per
    local process: a comparison across world sizes passes the same one to every launch, so that a node with one GPU
    does not time world size 1 on the GPU against 2 and 4 on the CPU."""
    import torch
    import torch.distributed as dist

    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be None (automatic), 'cpu' or 'cuda', got {device!r}")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        if var not in os.environ:
            raise RuntimeError(f"${var} is not set: start this script with torchrun (or course_utils.distributed.launch)")
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and gpus < local_world:
        raise RuntimeError(f"device='cuda' needs a GPU for each of the {local_world} local processes; this node has {gpus}")
    if device != "cpu" and gpus >= local_world:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = backend_for(device.type)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Worker(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


class WorkerFinished(BaseException):
    """Raised by `finish_worker` in a worker that torchrun forked: it unwinds the script back to
    `course_utils.worker_entry`, which returns to torchrun (a forked process must not `os._exit` before torchrun
    has its return value). Derived from BaseException so that a script's `except Exception` does not catch it."""


_FORKED_WORKER = False          # set by course_utils.worker_entry in a worker that torchrun forked


def finish_worker() -> NoReturn:
    """End a torchrun worker: wait for every rank, destroy the process group, and leave at once.

    The barrier keeps a rank from tearing down while another still communicates. Then the process ends without
    Python's interpreter shutdown: gloo's C++ threads can still hold tensors then (an optimizer or DDP keeps the
    group alive past `destroy_process_group`), and releasing one needs the GIL, which at shutdown aborts the
    process ("terminate called without an active exception", SIGABRT; pytorch/pytorch#179291). It happened here
    3 times in about 330 launches of the ZeRO lesson. A worker started as its own program ends with `os._exit(0)`;
    one that torchrun forked (what `launch` does on Linux) raises `WorkerFinished` back to its entry point, and
    multiprocessing ends the fork with `os._exit` once torchrun has its result. Everything `report` wrote is
    already on disk; stdout and stderr are flushed first. Call it last: nothing after it runs, atexit handlers
    included."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    if _FORKED_WORKER:
        raise WorkerFinished()
    os._exit(0)


def write_module(path: str | Path, *functions: Callable, header: str = "") -> Path:
    """Write the source of `functions` (e.g. defined in notebook cells) into an importable module at `path`.

    Worker processes cannot receive notebook functions by pickling, but they can import this file. `header` goes
    first (the imports the functions need)."""
    if not functions:
        raise ValueError("give at least one function to write")
    parts = [f'"""Written by course_utils.distributed.write_module: {", ".join(f.__name__ for f in functions)}."""',
             textwrap.dedent(header).strip()]
    for fn in functions:
        if not inspect.isfunction(fn):
            raise TypeError(f"write_module takes functions, got {type(fn).__name__} {fn!r}")
        if fn.__name__ == "<lambda>":
            raise ValueError("a lambda has no name to import: define it with def")
        # A grader's stand-in for the submission's function, in a judge (tools/judge_wire.py, which the grader installs
        # there as the module workbook_wire): the workers get a stand-in that calls the submission's own workers.
        worker = getattr(fn, "__workbook_worker__", None) if "workbook_wire" in sys.modules else None
        if worker is not None:
            parts.append(worker(Path(path).parent))
            continue
        try:
            parts.append(textwrap.dedent(inspect.getsource(fn)).strip())
        except (OSError, TypeError) as err:
            raise ValueError(f"the source of {fn.__name__} is not available ({err})") from None
    path = Path(path)
    path.write_text("\n\n\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return path


def write_json_atomically(path: str | Path, value) -> Path:
    """Write `value` as JSON to `path` through a temporary file and a rename: a reader sees all of it or nothing."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    tmp.replace(path)
    return path


def report(result: dict) -> None:
    """Called inside a worker: record this rank's result (JSON-serialisable) for `launch` to collect."""
    folder = os.environ.get(RESULTS_ENV)
    if not folder:
        raise RuntimeError(f"${RESULTS_ENV} is not set: run this script through course_utils.distributed.launch")
    rank = int(os.environ.get("RANK", "0"))
    path = Path(folder) / f"rank{rank}.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


# Errors a rank gets because a peer went away or stopped answering: consequences of a failure, never its cause.
PEER_ERROR = re.compile(r"Connection closed by peer|Connection reset by peer|Broken pipe|Connection refused|"
                        r"[Tt]imed out|Socket Timeout|NCCL (error|communicator was aborted)|ncclRemoteError|"
                        r"ncclSystemError|recvBytes|sendBytes|Gloo connectFullMesh|ProcessGroupGloo|"
                        r"failed to recv|failed to send|store.*(closed|reset)")


@dataclass(frozen=True)
class Failure:
    """How one rank of a launch ended badly, from its own error record or from torchrun's exit status."""
    rank: int
    node: int
    local_rank: int
    time: float                    # seconds since the epoch: when the worker raised (or torchrun saw it die)
    what: str                      # "ValueError: bad shard", "killed by signal 9 (SIGKILL)", "exited with code 3"
    traceback: str = ""
    consequence: bool = False      # a peer's collective error or torchrun's SIGTERM: caused by another failure

    def __str__(self) -> str:
        return f"rank {self.rank} (node {self.node}, local rank {self.local_rank}): {self.what}"


def failures_of(results_dir: str | Path) -> list[Failure]:
    """Every rank's failure in a launch, root cause first: the earliest failure that is not a consequence.

    Decided from what each worker recorded (course_utils.worker_entry: the exception and the nanosecond it was
    raised) and what torchrun recorded (exit code and signal of each failed rank), never from the order of lines
    in the shared output. A rank's collective error ("Connection closed by peer", a gloo or NCCL abort) and the
    SIGTERM torchrun sends to the survivors come after the failure that caused them, so they sort last."""
    folder = Path(results_dir)
    records = [json.loads(p.read_text()) for p in folder.glob("error-rank*-attempt*.json")]
    if records:                                           # with restarts, only the last attempt's failures count
        last = max(r["attempt"] for r in records)
        records = [r for r in records if r["attempt"] == last]
    out = {}
    for r in records:                                     # one per rank and attempt (worker_entry names the file so)
        what = f"{r['type']}: {r['message']}" if r["message"] else r["type"]
        consequence = r["dist_error"] or bool(PEER_ERROR.search(r["message"]))
        out[r["rank"]] = Failure(r["rank"], r["node"], r["local_rank"], r["time_ns"] / 1e9, what, r["traceback"],
                                 consequence)
    for path in folder.glob("failures-*.json"):
        for f in json.loads(path.read_text()):
            if f["rank"] in out:
                continue
            if f["exitcode"] < 0:
                what = f"killed by signal {-f['exitcode']} ({f['signal']})"
                consequence = f["signal"] == "SIGTERM"
            else:
                what = f"exited with code {f['exitcode']} without raising a Python exception (sys.exit, os._exit or a native crash)"
                consequence = False
            out[f["rank"]] = Failure(f["rank"], f["node"], f["local_rank"], float(f["time"]), what, "", consequence)
    return sorted(out.values(), key=lambda f: (f.consequence, f.time, f.rank))


def _root_cause(failures: list[Failure], output: str) -> str:
    """The text naming the root cause, with the consequences listed after it."""
    if not failures:
        return _error_from_output(output)
    first, rest = failures[0], failures[1:]
    lines = [f"{first}"]
    if first.traceback:
        lines.append(first.traceback.rstrip())
    if first.what.startswith("killed by signal") or first.what.startswith("exited with code"):
        native = _error_from_output(output, native_only=True)
        if native:
            lines.append(f"(in the output: {native})")
    if rest:
        lines.append("Other failures (consequences of it, or later):")
        lines += [f"  {f}" for f in rest]
    return "\n".join(lines)


def _error_from_output(output: str, native_only: bool = False) -> str:
    """When no worker left a record (torchrun itself failed, or the script ran without course_utils.worker_entry):
    a native crash message, else torchrun's own root-cause summary, else the last exception line."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"terminate called|what\(\):|Fatal Python error|Segmentation fault|core dumped", line):
            return "\n".join(lines[i:i + 3])
    if native_only:
        return ""
    if "Root Cause" in output:
        return "\n".join(output[output.index("Root Cause"):].splitlines()[:10])
    for i in range(len(lines) - 1, -1, -1):
        if re.search(r"(^|\]: )[A-Za-z_.]*(Error|Exception)\b.*: ", lines[i]):
            return "\n".join(lines[max(0, i - 4):i + 1])
    return "(no error message found in the output)"


@dataclass
class LaunchResult:
    returncode: int
    output: str                                              # torchrun's and the workers' stdout and stderr
    results: dict[int, list[dict]] = field(default_factory=dict)  # rank -> what it reported, in order
    failures: list[Failure] = field(default_factory=list)         # failed ranks, root cause first


def launch(script: str | Path, nproc: int, *args: str, timeout: float = 120.0, max_restarts: int = 0,
           extra_env: dict[str, str] | None = None, check: bool = True) -> LaunchResult:
    """Run `torchrun --standalone --nproc_per_node=nproc script *args` and wait at most `timeout` seconds.

    On timeout the whole process tree (torchrun and every worker) is killed and TimeoutError raised; with
    check=True a non-zero exit raises RuntimeError carrying the end of the output (the worker's traceback)."""
    script = _checked_launch(script, timeout, nproc=nproc)
    cmd = _driven([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   f"--max_restarts={max_restarts}", str(script), *map(str, args)])
    with _results_folder() as results_dir:
        (returncode, output), = _run_all([cmd], _worker_env(results_dir, extra_env), timeout,
                                         f"{script.name} with {nproc} processes")
        return _finish(script, returncode, output, results_dir, check)


def torchrun_command(script: str | Path, *args: str, nnodes: int, nproc_per_node: int, node_rank: int | str,
                     endpoint: str, job_id: str = "workbook", python: str = "torchrun") -> list[str]:
    """The torchrun command that starts node `node_rank` of an `nnodes`-node job; every node runs it with the same
    rendezvous `endpoint` (host:port of the first node) and job id. python="torchrun" gives the cluster form; a
    path to an interpreter gives `python -m torch.distributed.run` (what `launch_nodes` runs)."""
    _check_positive_ints(nnodes=nnodes, nproc_per_node=nproc_per_node)
    if isinstance(node_rank, int) and not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in [0, {nnodes}), got {node_rank}")
    if not re.fullmatch(r"[^:\s]+:(\d+|\$\w+|\$\{\w+\})", endpoint):
        raise ValueError(f"endpoint must be host:port, got {endpoint!r}")
    head = ["torchrun"] if python == "torchrun" else [python, "-m", "torch.distributed.run"]
    return [*head, f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}", f"--node_rank={node_rank}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", f"--rdzv_id={job_id}", str(script), *map(str, args)]


def _ephemeral_low() -> int:
    """The lowest port the system hands out for bind(("", 0)) and outgoing connections (Linux: its configured
    range; elsewhere the IANA range 49152-65535)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


@contextlib.contextmanager
def reserved_port(first: int | None = None):
    """A TCP port on 127.0.0.1 for a loopback rendezvous, reserved until the `with` block ends.

    A port found free by binding port 0 and closing can be handed to another process (a Jupyter kernel, another
    rendezvous) before torchrun binds it. So the port comes from below the system's ephemeral range, which no
    bind(("", 0)) or outgoing connection ever receives, and an exclusive lock file taken before the port is tried
    keeps every other `reserved_port` on this machine off it until the block ends. `first`: the first port tried
    (default: a random one in the range)."""
    high = _ephemeral_low() - 1
    low = max(1024, high - 8191)
    if high < low:
        raise RuntimeError(f"no port below the ephemeral range (it starts at {high + 1}) to reserve")
    count = high - low + 1
    start = random.SystemRandom().randrange(count) if first is None else (int(first) - low) % count
    user = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    locks = Path("/tmp" if Path("/tmp").is_dir() else tempfile.gettempdir()) / f"workbook-ports-{user}"
    locks.mkdir(mode=0o700, exist_ok=True)
    for k in range(count):
        port = low + (start + k) % count
        handle = open(locks / f"{port}.lock", "a+")
        try:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)     # another launch holds it: next port
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))                        # something else listens there: next port
        except OSError:
            handle.close()
            continue
        try:
            yield port
        finally:
            handle.close()                                         # closing releases the lock
        return
    raise RuntimeError(f"every port in {low}-{high} is in use or reserved")


def launch_nodes(script: str | Path, nnodes: int, nproc_per_node: int, *args: str, timeout: float = 120.0,
                 extra_env: dict[str, str] | None = None, check: bool = True) -> LaunchResult:
    """Start `nnodes` torchrun processes on this machine that rendezvous over loopback as separate "nodes",
    exactly as on a cluster (one `torchrun_command` per node); wait for all of them, at most `timeout` seconds."""
    script = _checked_launch(script, timeout)
    job = f"workbook-{os.getpid()}-{time.monotonic_ns()}"
    with reserved_port() as port, _results_folder() as results_dir:
        cmds = [_driven(torchrun_command(script, *args, nnodes=nnodes, nproc_per_node=nproc_per_node, node_rank=i,
                                         endpoint=f"127.0.0.1:{port}", job_id=job, python=sys.executable))
                for i in range(nnodes)]
        outcomes = _run_all(cmds, _worker_env(results_dir, extra_env), timeout,
                            f"{script.name} on {nnodes} nodes x {nproc_per_node} processes")
        returncode = next((rc for rc, _ in outcomes if rc != 0), 0)
        output = "\n".join(f"===== node {i} =====\n{out}" for i, (_, out) in enumerate(outcomes))
        return _finish(script, returncode, output, results_dir, check)


@contextlib.contextmanager
def _results_folder():
    """A fresh folder for the workers' reports and error records, removed when the launch is done (what they wrote
    is then in the LaunchResult or the exception)."""
    folder = Path(tempfile.mkdtemp(prefix="workbook-dist-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _worker_entry(fork: bool | None = None) -> list[str]:
    """torchrun's options that start each worker through course_utils.worker_entry (which records its exception).

    On Linux torchrun forks the workers from its own process, which has already imported torch
    (`--run-path --start-method=fork`, both torchrun options): a worker then starts in milliseconds instead of
    importing torch again (about 2 s of CPU each; measured here, 3 workers all-reducing took 7.6 s from launch to
    exit as programs and 3.3 s forked). Elsewhere (macOS, Windows: forking a process that loaded torch is not
    safe there) each worker is its own program, `python -m course_utils.worker_entry`."""
    fork = sys.platform.startswith("linux") if fork is None else fork
    if fork:                                 # --run-path wants the file's absolute path
        return ["--run-path", "--start-method=fork", str(Path(__file__).resolve().with_name("worker_entry.py"))]
    return ["--module", "course_utils.worker_entry"]


_WORKER_ENTRY = _worker_entry()


def _driven(cmd: list[str]) -> list[str]:
    """A `python -m torch.distributed.run ... script args` command turned into the launcher's own form: torchrun
    through course_utils.torchrun_driver (saves each rank's exit status), workers through worker_entry."""
    head = [sys.executable, "-m", "torch.distributed.run"]
    if cmd[:3] != head:
        raise ValueError(f"not a torchrun command for this interpreter: {cmd[:3]}")
    n = next((i for i, c in enumerate(cmd[3:]) if not c.startswith("--")), len(cmd) - 3)
    options, rest = cmd[3:3 + n], cmd[3 + n:]             # torchrun's --options, then the script and its args
    return [*_DRIVER, *options, *_WORKER_ENTRY, *rest]


def _check_positive_ints(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _checked_launch(script: str | Path, timeout: float, **counts: int) -> Path:
    """The script as a Path, after checking that it exists, the timeout is positive and the counts are >= 1."""
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"worker script {script} does not exist")
    _check_positive_ints(**counts)
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    # The workers import the modules next to the script from their source, never from a compiled cache that
    # something other than Python wrote.
    shutil.rmtree(script.resolve().parent / "__pycache__", ignore_errors=True)
    return script


def _worker_env(results_dir: Path, extra_env: dict[str, str] | None) -> dict[str, str]:
    # Workers get their own TCPStore rather than sharing the rendezvous store: with the shared store, a group
    # restarted by --max_restarts can read the previous attempt's gloo/NCCL addresses and fail to connect
    # (pytorch/pytorch#135712; measured here: 4 of 5 restarts failed with it, 0 of 5 without).
    env = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", **os.environ, **(extra_env or {})}
    return dict(env, **{RESULTS_ENV: str(results_dir), "OMP_NUM_THREADS": "1"})


def _run_all(cmds: list[list[str]], env: dict[str, str], timeout: float, what: str) -> list[tuple[int, str]]:
    """Run the commands concurrently (each in its own session, output to a temp file); kill every tree on timeout."""
    logs = [tempfile.NamedTemporaryFile(mode="w+", prefix="workbook-launch-", suffix=".log") for _ in cmds]
    procs = [_start(cmd, env, log) for cmd, log in zip(cmds, logs)]
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for proc in procs:
            kill_tree(proc.pid)
        for proc in procs:
            proc.wait(timeout=30)
        raise TimeoutError(f"{what} did not finish in {timeout:g} s and was killed.\n"
                           f"Last output:\n{_read(logs[0])[-3000:]}") from None
    finally:
        for proc in procs:
            if proc.returncode is None:
                kill_tree(proc.pid)                              # any straggler, e.g. after a failure
    return [(proc.returncode, _read(log)) for proc, log in zip(procs, logs)]


_DRIVER = [sys.executable, *SAFE_PATH, "-m", "course_utils.torchrun_driver"]      # SAFE_PATH: see zygote
# Variables that change from launch to launch without changing how torch imports: a zygote is shared across them
# (each child still gets its launch's exact environment). pytest names the running test in one.
_PER_LAUNCH_ENV = (RESULTS_ENV, "PYTEST_CURRENT_TEST")


def _start(cmd: list[str], env: dict[str, str], log):
    """Start one torchrun process. A driver command is forked from the zygote for this environment when there is
    one (course_utils.zygote: torch is already imported there, which saves each launch about 2.8 s); anything
    else, or where there is no zygote, is started as its own program."""
    if cmd[:len(_DRIVER)] == _DRIVER:
        zygote = zygote_for(env, ignore=_PER_LAUNCH_ENV)
        if zygote is not None:
            try:
                return zygote.start(cmd[len(_DRIVER):], env, os.getcwd(), log.name)
            except ZygoteUnavailable as err:
                print(f"course_utils: the zygote failed ({err}); starting torchrun as a program", file=sys.stderr)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def _read(log) -> str:
    log.seek(0)
    text = log.read()
    log.close()
    return text


def _finish(script: Path, returncode: int, output: str, results_dir: Path, check: bool) -> LaunchResult:
    results = {}
    for path in sorted(results_dir.glob("rank*.jsonl")):
        results[int(path.stem[4:])] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    failures = failures_of(results_dir) if returncode != 0 else []
    if check and returncode != 0:
        # The root cause goes last: tracebacks are read from the bottom, and logs that keep a tail keep it.
        raise RuntimeError(f"{script.name} failed (exit code {returncode}). End of the output:\n{output[-2000:]}\n"
                           f"First error (the root cause):\n{_root_cause(failures, output)}")
    return LaunchResult(returncode, output, results, failures)
