"""course_utils.distributed.launch: real torchrun launches (gloo, CPU), failures surfaced, hangs killed."""
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from course_utils.distributed import (backend_for, init_worker, launch, launch_nodes, report, torchrun_command,
                                      write_module)

WORKER = Path(__file__).parent / "workers" / "allreduce.py"


def test_backend_for():
    assert backend_for("cuda") == "nccl" and backend_for("cpu") == "gloo" and backend_for("mps") == "gloo"
    with pytest.raises(ValueError):
        backend_for("tpu")


def test_launch_collects_every_rank():
    result = launch(WORKER, 2, timeout=120)
    assert result.returncode == 0
    assert sorted(result.results) == [0, 1]
    assert all(r[0]["sum"] == 3.0 and r[0]["world_size"] == 2 for r in result.results.values())
    # finish_worker ended each rank: the report after it never ran
    assert all(len(r) == 1 for r in result.results.values()), result.results


def test_finish_worker_flushes_and_exits_at_once():
    # Outside torchrun there is no group to destroy; buffered output still arrives and nothing after the call runs.
    code = ("import atexit, sys\n"
            "from course_utils.distributed import finish_worker\n"
            "atexit.register(lambda: print('atexit ran'))\n"
            "print('before', end='')\n"
            "sys.stderr.write('to stderr')\n"
            "finish_worker()\n"
            "print('after')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent)
    assert (done.returncode, done.stdout, done.stderr) == (0, "before", "to stderr")


def test_worker_error_is_raised_with_its_message():
    with pytest.raises(RuntimeError, match="rank 1 was told to fail"):
        launch(WORKER, 2, "fail", timeout=120)


def test_hang_is_killed_without_orphans():
    before = {p.pid for p in psutil.process_iter()}
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="did not finish in 15"):
        launch(WORKER, 2, "hang", timeout=15)
    assert time.perf_counter() - start < 60
    time.sleep(1)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
                 and any("allreduce.py" in part for part in (p.info["cmdline"] or []))]
    assert not leftovers, leftovers


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        launch(tmp_path / "missing.py", 2)
    with pytest.raises(ValueError, match="nproc"):
        launch(WORKER, 0)
    with pytest.raises(RuntimeError, match="WORKBOOK_RESULTS_DIR"):
        report({"x": 1})


def test_kill_tree_reaches_children_in_their_own_session():
    import subprocess
    import sys

    from course_utils.processes import kill_tree

    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(2)
    family = psutil.Process(parent.pid).children(recursive=True) + [psutil.Process(parent.pid)]
    assert len(family) == 2
    kill_tree(parent.pid)
    parent.wait(timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)


def test_launch_nodes_rendezvous_over_loopback():
    result = launch_nodes(WORKER, 2, 2, timeout=120)
    assert sorted(result.results) == [0, 1, 2, 3]
    rows = [r[0] for r in result.results.values()]
    assert all(r["sum"] == 10.0 and r["world_size"] == 4 and r["backend"] == "gloo" for r in rows)
    assert sorted((r["node"], r["local_rank"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_launch_nodes_surfaces_a_failure():
    with pytest.raises(RuntimeError, match="rank 1 was told to fail"):
        launch_nodes(WORKER, 2, 1, "fail", timeout=120)


def test_torchrun_command_is_the_cluster_command():
    cmd = torchrun_command("train.py", "--steps", "10", nnodes=2, nproc_per_node=8, node_rank="$NODE_RANK",
                           endpoint="$MASTER_ADDR:29500", job_id="run1")
    assert cmd == ["torchrun", "--nnodes=2", "--nproc_per_node=8", "--node_rank=$NODE_RANK", "--rdzv_backend=c10d",
                   "--rdzv_endpoint=$MASTER_ADDR:29500", "--rdzv_id=run1", "train.py", "--steps", "10"]
    with pytest.raises(ValueError, match="node_rank"):
        torchrun_command("t.py", nnodes=2, nproc_per_node=1, node_rank=2, endpoint="h:1")
    with pytest.raises(ValueError, match="endpoint"):
        torchrun_command("t.py", nnodes=2, nproc_per_node=1, node_rank=0, endpoint="no-port")
    with pytest.raises(ValueError, match="nproc_per_node"):
        torchrun_command("t.py", nnodes=2, nproc_per_node=0, node_rank=0, endpoint="h:1")


def scale(x, factor=2.0):
    """Multiply by a factor."""
    return x * factor


def test_write_module_exports_functions_that_import_back(tmp_path):
    import importlib.util

    path = write_module(tmp_path / "answers.py", scale, header="import math")
    spec = importlib.util.spec_from_file_location("answers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.scale(3) == 6.0 and module.math is __import__("math")
    with pytest.raises(ValueError, match="at least one"):
        write_module(tmp_path / "x.py")
    with pytest.raises(ValueError, match="lambda"):
        write_module(tmp_path / "x.py", lambda x: x)
    with pytest.raises(TypeError, match="functions"):
        write_module(tmp_path / "x.py", len)


def test_init_worker_outside_torchrun_names_the_problem(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_worker()


def test_first_error_finds_python_native_and_signal_failures():
    from course_utils.distributed import _first_error

    python = "noise\n[rank1]: Traceback (most recent call last):\n[rank1]: ValueError: bad shard: 3\nChildFailedError: \n"
    assert _first_error(python).endswith("ValueError: bad shard: 3")
    native = "warning\nterminate called without an active exception\nSending SIGTERM\nChildFailedError: \n"
    assert _first_error(native).startswith("terminate called")
    signal = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \nRoot Cause (first observed failure):\n[0]:\n  exitcode  : -9\n"
    assert "exitcode  : -9" in _first_error(signal) and _first_error(signal).startswith("Root Cause")
    assert _first_error("all fine") == "(no exception line found)"
