"""Launch torch.distributed worker scripts from a notebook with torchrun, never hanging and never orphaning.

Functions defined in a notebook cannot be pickled into spawned processes, so distributed lessons run worker
*scripts* under `torchrun` (the same command a cluster uses). `launch` adds what a notebook needs: a timeout that
kills the whole process tree, the failing worker's error in the exception, and results that workers write as JSON
(via `report`) collected in rank order.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .processes import kill_tree

RESULTS_ENV = "WORKBOOK_RESULTS_DIR"


def backend_for(device_type: str) -> str:
    """The collective backend for a device type: NCCL for CUDA GPUs, gloo otherwise (CPU)."""
    if device_type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device type {device_type!r}")
    return "nccl" if device_type == "cuda" else "gloo"


def report(result: dict) -> None:
    """Called inside a worker: record this rank's result (JSON-serialisable) for `launch` to collect."""
    folder = os.environ.get(RESULTS_ENV)
    if not folder:
        raise RuntimeError(f"${RESULTS_ENV} is not set: run this script through course_utils.distributed.launch")
    rank = int(os.environ.get("RANK", "0"))
    path = Path(folder) / f"rank{rank}.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


def _first_error(output: str) -> str:
    """The first exception line in the output (the root cause: workers that fail later fail because of it)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"(^|\]: )[A-Za-z_.]*(Error|Exception)\b.*: ", line):
            return "\n".join(lines[max(0, i - 4):i + 1])
    return "(no exception line found)"


@dataclass
class LaunchResult:
    returncode: int
    output: str                                              # torchrun's and the workers' stdout and stderr
    results: dict[int, list[dict]] = field(default_factory=dict)  # rank -> what it reported, in order


def launch(script: str | Path, nproc: int, *args: str, timeout: float = 120.0, max_restarts: int = 0,
           extra_env: dict[str, str] | None = None, check: bool = True) -> LaunchResult:
    """Run `torchrun --standalone --nproc_per_node=nproc script *args` and wait at most `timeout` seconds.

    On timeout the whole process tree (torchrun and every worker) is killed and TimeoutError raised; with
    check=True a non-zero exit raises RuntimeError carrying the end of the output (the worker's traceback)."""
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"worker script {script} does not exist")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    results_dir = Path(tempfile.mkdtemp(prefix="workbook-dist-"))
    env = dict(os.environ, **(extra_env or {}), **{RESULTS_ENV: str(results_dir), "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max_restarts={max_restarts}", str(script), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        output, _ = proc.communicate(timeout=30)
        raise TimeoutError(f"{script.name} with {nproc} processes did not finish in {timeout} s and was killed.\n"
                           f"Last output:\n{output[-3000:]}") from None
    finally:
        kill_tree(proc.pid)                                      # any straggler, e.g. after a failure
    results = {}
    for path in sorted(results_dir.glob("rank*.jsonl")):
        results[int(path.stem[4:])] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if check and proc.returncode != 0:
        raise RuntimeError(f"{script.name} failed (exit code {proc.returncode}). First error:\n{_first_error(output)}\n"
                           f"End of the output:\n{output[-2000:]}")
    return LaunchResult(proc.returncode, output, results)
