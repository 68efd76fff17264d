"""course_utils.distributed.launch: real torchrun launches (gloo, CPU), failures surfaced, hangs killed."""
import getpass
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import course_utils.distributed as distributed
import course_utils.zygote as zygotes
from course_utils.distributed import (backend_for, init_worker, launch, launch_nodes, report, torchrun_command,
                                      write_module)

WORKER = Path(__file__).parent / "workers" / "allreduce.py"


def test_backend_for():
    assert backend_for("cuda") == "nccl" and backend_for("cpu") == "gloo" and backend_for("mps") == "gloo"
    with pytest.raises(ValueError):
        backend_for("tpu")


@pytest.fixture(params=["forked", "programs"])
def entry(request, monkeypatch):
    """Both ways `launch` starts workers: forked by torchrun (Linux) and as programs of their own (elsewhere)."""
    forked = request.param == "forked"
    if forked and not sys.platform.startswith("linux"):
        pytest.skip("torchrun forks the workers only on Linux")
    monkeypatch.setattr(distributed, "_WORKER_ENTRY", distributed._worker_entry(fork=forked))
    return forked


def test_launch_collects_every_rank(entry):
    result = launch(WORKER, 2, timeout=120)
    assert result.returncode == 0
    assert sorted(result.results) == [0, 1]
    assert [r[0]["forked"] for r in result.results.values()] == [entry, entry]
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


def root_cause(err: Exception) -> str:
    """The first line after the launcher's 'root cause' heading in a failed launch's exception."""
    text = str(err)
    return text[text.index("First error (the root cause):\n"):].splitlines()[1]


def test_worker_error_is_the_root_cause_every_time():
    # Rank 1 raises while rank 0 waits in all_reduce; rank 0 then fails with gloo's "Connection closed by peer",
    # and which of the two reaches the shared output first is a race. The root cause must be rank 1's, every time:
    # 20 launches, two at a time (the extra load varies which rank prints first even more).
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        with pytest.raises(RuntimeError) as info:
            launch(WORKER, 2, "fail", timeout=300)
        return root_cause(info.value)

    with ThreadPoolExecutor(max_workers=2) as pool:
        seen = list(pool.map(one, range(20)))
    assert seen == ["rank 1 (node 0, local rank 1): ValueError: rank 1 was told to fail"] * 20, seen


def test_peer_errors_are_named_as_consequences():
    result = launch(WORKER, 2, "fail", timeout=120, check=False)
    assert result.returncode != 0
    first, *rest = result.failures
    assert (first.rank, first.consequence, first.what) == (1, False, "ValueError: rank 1 was told to fail")
    assert 'raise ValueError("rank 1 was told to fail")' in first.traceback and "runpy" not in first.traceback
    # rank 0 either raised a collective error or was stopped by torchrun's SIGTERM: a consequence either way
    assert all(f.rank == 0 and f.consequence for f in rest), rest


@pytest.mark.parametrize("mode,what", [("kill", "killed by signal 9 (SIGKILL)"), ("exit", "exited with code 3")])
def test_a_worker_that_dies_without_an_exception_is_named_with_its_rank(mode, what, entry):
    with pytest.raises(RuntimeError) as info:
        launch(WORKER, 2, mode, timeout=120)
    assert root_cause(info.value).startswith(f"rank 1 (node 0, local rank 1): {what}"), str(info.value)[-1500:]


@pytest.fixture
def adopted_leftovers():
    """While the test runs, this process is a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER): a process whose
    parent dies is re-parented to us, not to init, so whatever a launch leaves running stays our descendant, however
    it was started (the zygote forks torchrun and its workers, so their command lines name no script). Yields a
    function listing the live descendants that are new since the test began, the zygotes excepted."""
    import ctypes

    if not sys.platform.startswith("linux"):
        pytest.skip("child subreapers are Linux only")
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    assert libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}

    def zygote_pids():
        return {z.proc.pid for z in zygotes._ZYGOTES.values() if z is not None}

    def leftovers():
        return [p for p in me.children(recursive=True) if p.pid not in before | zygote_pids()]

    try:
        yield leftovers
    finally:
        libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)
        for p in me.children():                              # reap the adopted ones that have ended
            if p.pid not in before | zygote_pids():
                try:
                    os.waitpid(p.pid, os.WNOHANG)
                except ChildProcessError:
                    pass


def test_hang_is_killed_without_orphans(adopted_leftovers, entry):
    # However far the launch got in 5 s (torchrun alone, or workers already waiting), all of it must be gone. Forked
    # workers also die with their torchrun by themselves; workers started as programs show whether the launcher
    # kills the whole tree (seen failing when only torchrun was killed).
    with pytest.raises(TimeoutError, match="did not finish in 5 s"):
        launch(WORKER, 2, "hang", timeout=5)
    _, alive = psutil.wait_procs(adopted_leftovers(), timeout=60)     # bounded wait for them to be gone
    leftovers = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not leftovers, [(p.pid, p.ppid(), p.cmdline()) for p in leftovers]


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        launch(tmp_path / "missing.py", 2)
    with pytest.raises(ValueError, match="nproc"):
        launch(WORKER, 0)
    with pytest.raises(RuntimeError, match="WORKBOOK_RESULTS_DIR"):
        report({"x": 1})


def test_kill_tree_reaches_children_in_their_own_session():
    from course_utils.processes import kill_tree

    # The child starts a grandchild in a session of its own and prints its pid: wait for that line, not a time.
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    family = [psutil.Process(parent.pid), psutil.Process(grandchild)]
    assert psutil.Process(grandchild).ppid() == parent.pid
    kill_tree(parent.pid)
    parent.wait(timeout=60)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)


def test_launch_nodes_rendezvous_over_loopback():
    result = launch_nodes(WORKER, 2, 2, timeout=120)
    assert sorted(result.results) == [0, 1, 2, 3]
    rows = [r[0] for r in result.results.values()]
    assert all(r["sum"] == 10.0 and r["world_size"] == 4 and r["backend"] == "gloo" for r in rows)
    assert sorted((r["node"], r["local_rank"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_launch_nodes_surfaces_the_failing_rank_on_its_node():
    for _ in range(3):
        with pytest.raises(RuntimeError) as info:
            launch_nodes(WORKER, 2, 1, "fail", timeout=120)
        assert root_cause(info.value) == "rank 1 (node 1, local rank 0): ValueError: rank 1 was told to fail"


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


def _fake_node(monkeypatch, gpus, local_world):
    """A worker's environment on a node with `gpus` GPUs and `local_world` local processes; no real group."""
    import torch
    import torch.distributed as dist
    env = {"RANK": "0", "WORLD_SIZE": str(local_world), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": str(local_world)}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: local_world)


@pytest.mark.parametrize("gpus, local_world, device, expected", [
    (1, 1, None, "cuda"), (1, 2, None, "cpu"), (4, 4, None, "cuda"), (0, 1, None, "cpu"),
    (1, 1, "cpu", "cpu"), (4, 2, "cpu", "cpu"), (2, 2, "cuda", "cuda")])
def test_init_worker_picks_the_device_asked_for(monkeypatch, gpus, local_world, device, expected):
    _fake_node(monkeypatch, gpus, local_world)
    worker = init_worker(device)
    assert worker.device.type == expected, f"{gpus} GPUs, {local_world} local processes, device={device!r}: got {worker.device}"
    assert worker.backend == backend_for(expected)


def test_init_worker_refuses_a_device_the_node_cannot_give(monkeypatch):
    _fake_node(monkeypatch, 1, 2)
    with pytest.raises(RuntimeError, match="GPU for each of the 2 local processes; this node has 1"):
        init_worker("cuda")
    with pytest.raises(ValueError, match="'cpu' or 'cuda', got 'gpu'"):
        init_worker("gpu")


def _record(folder, rank, time_ns, type_, message, attempt=0, dist_error=False):
    row = {"rank": rank, "local_rank": rank, "node": 0, "attempt": attempt, "pid": 100 + rank, "time_ns": time_ns,
           "type": type_, "message": message, "dist_error": dist_error, "traceback": f"tb {rank}"}
    (folder / f"error-rank{rank}-attempt{attempt}.json").write_text(json.dumps(row))


def test_failures_are_ordered_by_cause_not_by_time_alone(tmp_path):
    from course_utils.distributed import failures_of

    # rank 0's peer error carries an earlier clock than rank 2's own error: it is still a consequence
    _record(tmp_path, 0, 1_000, "RuntimeError", "[../gloo/transport/tcp/pair.cc:534] Connection closed by peer")
    _record(tmp_path, 2, 2_000, "KeyError", "'weights'")
    _record(tmp_path, 1, 3_000, "torch.distributed.DistBackendError", "something", dist_error=True)
    (tmp_path / "failures-1.json").write_text(json.dumps([
        {"rank": r, "node": 0, "local_rank": r, "pid": 1, "exitcode": 1, "signal": None, "time": 5, "has_error_file": True}
        for r in (0, 1, 2)] + [
        {"rank": 3, "node": 0, "local_rank": 3, "pid": 9, "exitcode": -15, "signal": "SIGTERM", "time": 9, "has_error_file": False}]))
    order = failures_of(tmp_path)
    assert [(f.rank, f.consequence) for f in order] == [(2, False), (0, True), (1, True), (3, True)]
    assert order[0].what == "KeyError: 'weights'" and order[3].what == "killed by signal 15 (SIGTERM)"


def test_only_the_last_attempt_counts_and_a_signal_can_be_the_cause(tmp_path):
    from course_utils.distributed import _root_cause, failures_of

    _record(tmp_path, 0, 1_000, "ValueError", "attempt 0's error", attempt=0)
    _record(tmp_path, 0, 9_000_000_000, "RuntimeError", "Connection reset by peer", attempt=1)
    (tmp_path / "failures-7.json").write_text(json.dumps([
        {"rank": 1, "node": 1, "local_rank": 0, "pid": 7, "exitcode": -9, "signal": "SIGKILL", "time": 8, "has_error_file": False}]))
    order = failures_of(tmp_path)
    assert [str(f) for f in order] == ["rank 1 (node 1, local rank 0): killed by signal 9 (SIGKILL)",
                                       "rank 0 (node 0, local rank 0): RuntimeError: Connection reset by peer"]
    text = _root_cause(order, "noise\nterminate called after throwing an instance of 'c10::Error'\n  what():  boom\n")
    assert text.splitlines()[0].endswith("(SIGKILL)") and "terminate called" in text and "Connection reset" in text


def test_error_from_output_is_the_fallback_without_records():
    from course_utils.distributed import _error_from_output

    python = "noise\n[rank1]: Traceback (most recent call last):\n[rank1]: ValueError: bad shard: 3\nmore\n"
    assert _error_from_output(python).endswith("ValueError: bad shard: 3")
    native = "warning\nterminate called without an active exception\nSending SIGTERM\nChildFailedError: \n"
    assert _error_from_output(native).startswith("terminate called")
    summary = "ChildFailedError: \nRoot Cause (first observed failure):\n[0]:\n  exitcode  : -9\n"
    assert _error_from_output(summary).startswith("Root Cause") and "exitcode  : -9" in _error_from_output(summary)
    assert _error_from_output("all fine") == "(no error message found in the output)"


def test_worker_entry_runs_the_script_as_python_would_and_records_its_error(tmp_path):
    script = tmp_path / "sub" / "job.py"
    script.parent.mkdir()
    (script.parent / "helper.py").write_text("VALUE = 41\n")
    script.write_text("import sys\nfrom helper import VALUE\n"
                      "print(__name__, sys.argv[1:], VALUE + 1, flush=True)\n"
                      "if sys.argv[1] == 'boom':\n    raise KeyError('missing shard')\n"
                      "if sys.argv[1] == 'exit':\n    sys.exit(4)\n")
    results = tmp_path / "results"
    results.mkdir()
    env = dict(os.environ, WORKBOOK_RESULTS_DIR=str(results), RANK="3", LOCAL_RANK="1", GROUP_RANK="1")
    env.pop("TORCHELASTIC_ERROR_FILE", None)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "course_utils.worker_entry", str(script), *args], env=env,
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    ok = run("fine", "x")
    assert (ok.returncode, ok.stdout) == (0, "__main__ ['fine', 'x'] 42\n") and not list(results.iterdir())
    boom = run("boom")
    assert boom.returncode == 1 and "KeyError: 'missing shard'" in boom.stderr
    record = json.loads((results / "error-rank3-attempt0.json").read_text())
    assert (record["rank"], record["local_rank"], record["node"], record["type"], record["message"]) == \
        (3, 1, 1, "KeyError", "'missing shard'")
    assert record["traceback"].splitlines()[1].startswith(f'  File "{script}"'), record["traceback"]
    assert abs(record["time_ns"] / 1e9 - time.time()) < 3600
    assert run("exit").returncode == 4
    assert json.loads((results / "error-rank3-attempt0.json").read_text())["type"] == "SystemExit"
    missing = subprocess.run([sys.executable, "-m", "course_utils.worker_entry", str(tmp_path / "nope.py")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_the_driver_preloads_only_torch_and_numpy_modules_a_worker_imports(tmp_path):
    from course_utils.torchrun_driver import preload_imports
    script = tmp_path / "w.py"
    script.write_text("import os\nimport numpy as np\nfrom torch.nn.parallel import DistributedDataParallel\n"
                      "import torch.no_such_module\nfrom common import make_model\nfrom . import sibling\n"
                      "def f():\n    import torch.distributed.optim\n")
    # the script's own modules, relative imports, imports inside functions and missing modules are left alone
    assert preload_imports(script) == ["numpy", "torch.nn.parallel"]
    assert preload_imports(tmp_path / "missing.py") == []
    (tmp_path / "bad.py").write_text("import torch\n(")
    assert preload_imports(tmp_path / "bad.py") == []


WHOAMI = Path(__file__).parent / "workers" / "whoami.py"
ZYGOTE_CODE = "from course_utils.zygote import serve; serve()"


def whoami(*args, **kwargs) -> dict:
    result = launch(WHOAMI, 1, *args, timeout=120, **kwargs)
    return result.results[0][0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux only")
def test_launches_fork_their_torchrun_from_one_warm_zygote_per_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = whoami("a", extra_env={"WORKBOOK_TEST_VALUE": "one"}), whoami("b", extra_env={"WORKBOOK_TEST_VALUE": "one"})
    c = whoami("c", extra_env={"WORKBOOK_TEST_VALUE": "two"})
    zygote = psutil.Process(a["launcher"])
    assert zygote.cmdline()[-2:] == ["-c", ZYGOTE_CODE] and zygote.ppid() == os.getpid(), zygote.cmdline()
    assert b["launcher"] == a["launcher"] != c["launcher"], "one zygote per environment, reused"
    assert len({a["driver"], b["driver"], c["driver"]}) == 3, "a fresh torchrun process for every launch"
    # Each forked torchrun is what `python -m course_utils.torchrun_driver` would be: its own session, the
    # launcher's working directory, this launch's environment, results folder and arguments.
    for row, arg, value in ((a, "a", "one"), (b, "b", "one"), (c, "c", "two")):
        assert row["driver_session"] == row["driver"]
        assert (row["cwd"], row["value"], row["argv"], row["path0"]) == (str(tmp_path), value, [str(WHOAMI), arg],
                                                                          str(WHOAMI.parent))
        assert row["sigint_default"]
    assert len({a["results_dir"], b["results_dir"], c["results_dir"]}) == 3


LOADED_AT_START = ("import sys\nloaded = {m: m in sys.modules for m in ('torch._dynamo', 'torch.distributed.optim')}\n"
                   "from course_utils.distributed import report\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux only")
def test_a_zygote_loads_what_only_training_workers_need_on_the_first_launch_that_needs_it(tmp_path, monkeypatch):
    # torch._dynamo (1.7 s of CPU) and torch.distributed.optim (1.2 s) were imported by every zygote at start; now
    # by the zygote on the first request whose script needs them, and kept. What the worker finds loaded when its
    # script begins says what it inherited from the zygote.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain.py").write_text(LOADED_AT_START + "report(loaded)\n")
    (tmp_path / "trainer.py").write_text("import torch\n\ndef sgd(params):\n    return torch.optim.SGD(params, lr=0.1)\n")
    (tmp_path / "trains.py").write_text(LOADED_AT_START + "from trainer import sgd\nreport(loaded)\n")
    (tmp_path / "zero.py").write_text(LOADED_AT_START + "from torch.distributed.optim import ZeroRedundancyOptimizer\n"
                                      "report(loaded)\n")
    env = {"WORKBOOK_TEST_VALUE": f"lazy-{tmp_path.name}"}             # a zygote of this test's own
    first = launch(tmp_path / "plain.py", 1, timeout=120, extra_env=env).results[0][0]
    assert first == {"torch._dynamo": False, "torch.distributed.optim": False}, first
    trains = launch(tmp_path / "trains.py", 1, timeout=120, extra_env=env).results[0][0]
    assert trains == {"torch._dynamo": True, "torch.distributed.optim": False}, trains     # its module uses torch.optim
    zero = launch(tmp_path / "zero.py", 1, timeout=120, extra_env=env).results[0][0]
    assert zero == {"torch._dynamo": True, "torch.distributed.optim": True}, zero
    again = launch(tmp_path / "plain.py", 1, timeout=120, extra_env=env).results[0][0]
    assert again == {"torch._dynamo": True, "torch.distributed.optim": True}, "the zygote keeps what it loaded"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P is Python 3.11's")
@pytest.mark.parametrize("zygote", ["zygote", "program"])
def test_torchrun_imports_nothing_from_the_launcher_s_working_folder(tmp_path, monkeypatch, zygote):
    # A grading kernel's working folder is the submission's to write in, and torchrun's process (the zygote, or
    # `python -m course_utils.torchrun_driver`) started there with it first on sys.path: a numpy.py planted there
    # ran inside it, before any worker existed, so every forked worker inherited what it did (red-team, session 36:
    # seen running in both). Workers still import the modules beside their script, as `python script.py` would.
    folder, work = tmp_path / "cwd", tmp_path / "work"
    folder.mkdir(), work.mkdir()
    planted = tmp_path / "planted-ran"
    for name in ("numpy", "yaml", "sympy", "typing_extensions"):
        (folder / f"{name}.py").write_text(f"open({str(planted)!r}, 'a').write({name!r} + ' ran\\n')\n"
                                            "raise ImportError('planted')\n")
    (work / "beside.py").write_text("VALUE = 42\n")
    (work / "script.py").write_text("import sys\nfrom course_utils.distributed import report\nimport beside\n"
                                    "report({'value': beside.VALUE, 'path0': sys.path[0]})\n")
    monkeypatch.chdir(folder)
    if zygote == "program":
        monkeypatch.setenv("WORKBOOK_NO_ZYGOTE", "1")
    env = {"WORKBOOK_TEST_VALUE": f"cwd-{tmp_path.name}"}               # a zygote of this test's own, started here
    row = launch(work / "script.py", 1, timeout=120, extra_env=env).results[0][0]
    assert row == {"value": 42, "path0": str(work)}, row
    assert not planted.exists(), planted.read_text()


@pytest.mark.parametrize("filtered", [True, False])
def test_torchrun_s_logged_tracebacks_do_not_import_dynamo_in_the_driver(filtered):
    # torch's log formatter imports torch._dynamo for any record with an exception (torchrun's logger.exception when
    # a worker fails: 2 s of CPU per failed launch); the driver's filter gives it the same text without that import.
    # Unfiltered (the control), the import happens: so the check below can fail.
    code = ("import logging, sys, torch, torch.distributed.run\n"
            "from course_utils import torchrun_driver\n"
            f"if {filtered}:\n    torchrun_driver._tracebacks_without_dynamo()\n"
            "try:\n    raise ValueError('rank 1 was told to fail')\nexcept ValueError:\n"
            "    logging.getLogger('torch.distributed.elastic.multiprocessing.api').exception('failed')\n"
            "print('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(not filtered)], done.stdout
    lines = done.stderr.splitlines()
    assert lines[0].startswith("E") and lines[0].endswith("] failed"), lines[:2]
    assert lines[-1].endswith("] ValueError: rank 1 was told to fail"), lines[-3:]   # the traceback, each line logged
    assert "Traceback (most recent call last):" in done.stderr


@pytest.mark.parametrize("source, beside, expected", [
    ("from course_utils.distributed import init_worker, report\nimport helper\nreport(helper.f(1))\n",
     "def f(v):\n    return float(v)\n", False),
    ("import torch\nimport torch.distributed as dist\nx = torch.ones(3)\ndist.all_reduce(x)\n", "", False),
    ("import torch\nopt = torch.optim.Adam([torch.zeros(1, requires_grad=True)])\n", "", True),
    ("from torch import optim\n", "", True),
    ("from torch.nn.parallel import DistributedDataParallel as DDP\n", "", True),
    ("import helper\n", "import torch\nSGD = torch.optim.SGD\n", True),          # in the module beside it
    ("from course_utils.training import train\n", "", True),                       # course_utils may train
    ("import torch\n(", "", True),                                                 # unreadable: load them
])
def test_which_scripts_may_use_torchs_lazy_imports(tmp_path, source, beside, expected):
    from course_utils.torchrun_driver import uses_lazy_imports

    (tmp_path / "script.py").write_text(source)
    if beside:
        (tmp_path / "helper.py").write_text(beside)
    assert uses_lazy_imports(tmp_path / "script.py") is expected, source


def test_without_the_zygote_torchrun_is_a_program_of_its_own(monkeypatch):
    monkeypatch.setenv("WORKBOOK_NO_ZYGOTE", "1")
    row = whoami("x")
    assert row["launcher"] == os.getpid()
    head = [*distributed.SAFE_PATH, "-m", "course_utils.torchrun_driver"]
    assert row["driver_cmdline"][1:1 + len(head)] == head, row["driver_cmdline"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux only")
def test_the_zygote_ends_with_its_launcher(tmp_path):
    code = (f"from course_utils.distributed import launch\n"
            f"print(launch({str(WHOAMI)!r}, 1, 'x', timeout=120).results[0][0]['launcher'], flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pid = int(done.stdout.split()[-1])
    try:
        zygote = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return                                                   # already gone
    _, alive = psutil.wait_procs([zygote], timeout=60)           # it exits when its input closes
    assert not alive or zygote.status() == psutil.STATUS_ZOMBIE, f"zygote {pid} outlived its launcher"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux only")
def test_a_zygote_that_dies_mid_launch_fails_that_launch_and_is_replaced():
    import signal
    import threading

    first = whoami("warm")["launcher"]                          # the zygote for this environment, started
    zygote = psutil.Process(first)
    outcome = {}

    def hanging_launch():
        try:
            launch(WORKER, 2, "hang", timeout=300)
        except BaseException as err:                           # noqa: BLE001 (the test inspects it)
            outcome["error"] = err

    client = next(z for z in zygotes._ZYGOTES.values() if z is not None and z.proc.pid == first)
    thread = threading.Thread(target=hanging_launch)
    thread.start()
    # Wait (bounded) until the launcher holds the pid of its torchrun, i.e. waits for it to end: from then on the
    # zygote's death can only reach the launch as "died", never as a failed start.
    deadline = time.monotonic() + 120
    while not client.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.running, "the launch never forked its torchrun"
    drivers = [psutil.Process(pid) for pid in client.running]
    tree = drivers + [p for d in drivers for p in d.children(recursive=True)]
    zygote.send_signal(signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the launch kept waiting for a dead zygote"
    assert "zygote" in str(outcome.get("error")) and "died" in str(outcome["error"]), outcome
    _, alive = psutil.wait_procs(tree, timeout=60)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "the orphaned torchrun tree survived"
    assert whoami("again")["launcher"] not in (first, None), "a new zygote replaces the dead one"


def test_launches_leave_no_results_folder_behind(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))    # where launch makes its results folder
    launch(WORKER, 2, timeout=120)
    with pytest.raises(RuntimeError):
        launch(WORKER, 2, "fail", timeout=120)
    with pytest.raises(TimeoutError):
        launch(WORKER, 2, "hang", timeout=5)
    assert not list(tmp_path.glob("workbook-dist-*")), list(tmp_path.iterdir())


def test_at_most_keep_zygotes_are_kept_and_a_busy_one_is_never_closed(monkeypatch):
    class Fake:
        def __init__(self, env):
            self.env, self.running, self.alive, self.owner, self.closed = env, set(), True, os.getpid(), False

        def close(self):
            self.closed = True

    monkeypatch.setattr(zygotes, "_ZYGOTES", {})
    monkeypatch.setattr(zygotes, "Zygote", Fake)
    monkeypatch.setattr(zygotes, "KEEP", 2)
    monkeypatch.setattr(zygotes, "enabled", lambda: True)
    a, b = zygotes.zygote_for({"V": "a"}), zygotes.zygote_for({"V": "b"})
    assert zygotes.zygote_for({"V": "a"}) is a and not (a.closed or b.closed)     # reused, now the most recent
    c = zygotes.zygote_for({"V": "c"})
    assert b.closed and not a.closed and not c.closed, "the least recently used one makes room"
    a.running.add(123)                                                            # a launch is using it
    d = zygotes.zygote_for({"V": "d"})
    assert not a.closed and c.closed and not d.closed
    assert [z.env["V"] for z in zygotes._ZYGOTES.values()] == ["a", "d"]


def test_torchruns_temporary_files_go_with_the_launch_and_workers_keep_tmpdir(tmp_path, entry):
    # torch.multiprocessing writes a pytorch-errorfile-*.pickle in the temporary folder for each forked worker that
    # raises, and never removes it (1,750 had piled up in /tmp here); workers still use $TMPDIR as usual.
    env = {"TMPDIR": str(tmp_path)}
    assert whoami("x", extra_env=env)["tempdir"] == str(tmp_path)
    with pytest.raises(RuntimeError):
        launch(WORKER, 2, "fail", timeout=120, extra_env=env)
    left = [p.name for p in tmp_path.iterdir() if p.name != f"torchinductor_{getpass.getuser()}"]   # torch's cache
    assert not left, left


def test_reserved_ports_lie_below_the_ephemeral_range_and_two_launches_never_share_one():
    # launch_nodes' rendezvous port: outside the range bind(("", 0)) hands out (a Jupyter kernel's ports, torchrun's
    # own stores), and locked for the launch, so a second launch tried on the same port moves on to another.
    import socket

    low = distributed._ephemeral_low()
    with distributed.reserved_port() as first:
        assert first < low, f"reserved port {first} lies in the ephemeral range starting at {low}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", first))                         # free for the launch's own rendezvous
        with distributed.reserved_port(first=first) as second:
            assert second != first, "a second launch was given a port that is still reserved"
            assert second < low
    with distributed.reserved_port(first=first) as again:
        assert again == first, "a port whose launch has ended was not released"
    with socket.socket() as busy:                                # a port something listens on is skipped
        busy.bind(("127.0.0.1", first))
        busy.listen()
        with distributed.reserved_port(first=first) as other:
            assert other != first, "reserved a port another process listens on"
