"""course_utils.distributed.launch: real torchrun launches (gloo, CPU), failures surfaced, hangs killed."""
import time
from pathlib import Path

import psutil
import pytest

from course_utils.distributed import backend_for, launch, report

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
