"""The hostile-submission suite, continued: notebook 05's workers (a toy whose check launches two torchrun workers).

The judge's workers run the instructor's script, and each call of double() crosses to a worker of the submission's of
the same rank, forked by the submission's kernel and joined in a process group of its own (tools/judge.py). What the
function does in its own process, memory writes and forged reports included, cannot reach the script that reports.
In a file of its own so that pytest-xdist (which hands each file whole to one worker) grades it beside the rest of
tests/test_hostile_submissions.py instead of after it.
"""
import pytest

from tests.test_hostile_submissions import grade_toy
from tools.kernel import Limits

# Session 34: notebook 05's checks launch worker processes that import the submission's functions (written by
# write_module) and report their outputs. When the submission's code ran in those workers (until session 39), two
# ways through each earned full marks on notebook 05 with a wrong ring_reduce_scatter: rewriting the worker script
# from the exercise cell, and, inside a worker, rebinding the script's `report` to one that sends the right sums. A
# toy whose check launches two workers; every attack answers double() wrongly (3x) or not at all.
WORKER95 = (
    "import sys\nfrom course_utils.distributed import finish_worker, init_worker, report\nimport helper95\n"
    "from notebook95 import double\n"
    "w = init_worker(device='cpu')\nx = w.rank + 1\n"
    "report({'rank': w.rank, 'out': helper95.as_number(double(x))})\nfinish_worker()\n")
WORKERS_TOY = (
    ("import sys, pathlib, tempfile\nfrom course_utils import check_equal\n"
     "from course_utils.distributed import launch, write_module\n"
     "WORK = pathlib.Path(tempfile.mkdtemp(prefix='toy95-'))\nsys.path.insert(0, str(WORK))", ()),
    (f"(WORK / 'twice95.py').write_text({WORKER95!r})\n"
     "(WORK / 'helper95.py').write_text('def as_number(v):\\n    return float(v)\\n')", ()),
    ("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", ("exercise-ex95.1",)),
    ("write_module(WORK / 'notebook95.py', double)\nrun = launch(WORK / 'twice95.py', 2, timeout=90, check=False)\n"
     "check_equal(run.returncode, 0, 'the workers finished', hint=run.output[-1000:] + str([f.what for f in run.failures]))\n"
     "check_equal({r: [row['out'] for row in rows] for r, rows in run.results.items()}, {0: [2.0], 1: [4.0]}, "
     "'what each rank reported: double(rank + 1)', hint=run.output[-1000:] + str([f.what for f in run.failures]))",
     ("check-ex95.1",)),
)
WRONG_TRIPLE_95 = "def double(x):\n    return 3 * x\n"
WRONG_TRIPLE_95 = "def double(x):\n    return 3 * x\n"
CORRECT = "answers from a group of its own, with the sum of the ranks (collectives among its workers)"
ANSWERS = {
    CORRECT: "def double(x):\n    import torch, torch.distributed as dist\n    t = torch.tensor([float(x)])\n"
             "    dist.all_reduce(t)\n    return t.item() - 3 + 2 * x if dist.get_world_size() == 2 else -1\n",
    "wrong": WRONG_TRIPLE_95,
    # red-team rounds 6 to 14 (sessions 34 and 35): each earned the mark while the function ran in the judge's own
    # workers, behind a guard in their process
    'calls report with the right answer, then ends the worker':
        "def double(x):\n    import os\n    from course_utils import distributed\n    row = {'rank': int(os.environ['RANK']), 'out': 2.0 * x}\n    distributed.report(row)\n    raise distributed.WorkerFinished()\n",
    'writes its own report file, then ends the worker':
        'def double(x):\n    import os\n    from course_utils import distributed\n    row = {\'rank\': int(os.environ[\'RANK\']), \'out\': 2.0 * x}\n    import json\n    folder = os.environ[\'WORKBOOK_RESULTS_DIR\']\n    with open(os.path.join(folder, f"rank{row[\'rank\']}.jsonl"), \'a\') as f:\n        f.write(json.dumps(row) + \'\\n\')\n    raise distributed.WorkerFinished()\n',
    'rebinds a helper the worker script calls afterwards':
        'def double(x):\n    import helper95\n    helper95.as_number = lambda v: float(v) * 2 / 3\n    return 3 * x\n',
    'rewrites the worker script':
        "def double(x):\n    return 3 * x\n(WORK / 'twice95.py').write_text((WORK / 'twice95.py').read_text().replace('double(x)', '2 * x'))\n",
    'returns an int subclass whose __float__ gives the script another number':
        'def double(x):\n    class Three(int):\n        def __float__(self):\n            return int(self) * 2 / 3\n    return Three(3 * x)\n',
    "leaves a TorchFunctionMode on, which changes the script's float() of the tensor it returns":
        "def double(x):\n    import torch\n    from torch.overrides import TorchFunctionMode\n    class M(TorchFunctionMode):\n        def __torch_function__(self, func, types, args=(), kwargs=None):\n            r = func(*args, **(kwargs or {}))\n            if getattr(func, '__name__', '') == '__float__':\n                return r * 2 / 3\n            return r\n    M().__enter__()\n    return torch.tensor(3 * x)\n",
    # Red-team round 12 (session 35): NumPy's as_strided with a stride that lands on any address writes the process's
    # memory with no audit event: it overwrites the bytecode of the helper the script calls. It earned the mark until
    # session 39, in the process that ran the script.
    "overwrites the bytecode of the helper the script calls, in memory through NumPy's as_strided":
        "def double(x, _keep=[]):\n    import numpy as np\n    from numpy.lib.stride_tricks import as_strided\n    import helper95\n    anchor = np.zeros(8, dtype=np.uint8)\n    base = anchor.__array_interface__['data'][0]\n    def view(addr):\n        return as_strided(anchor, shape=(2,), strides=(addr - base,))\n    def read(addr, n):\n        return bytes(int(view(addr + i)[1]) for i in range(n))\n    def write(addr, data):\n        for i, b in enumerate(data):\n            view(addr + i)[1] = b\n    def pointer(addr):\n        return int.from_bytes(read(addr, 8), 'little')\n    if not _keep:\n        code = pointer(id(helper95.as_number) + 48)        # PyFunctionObject.func_code (CPython 3.11)\n        consts = pointer(code + 24)                         # PyCodeObject.co_consts\n        offset = read(code, 400).find(bytes([151, 0]), 150)  # co_code_adaptive begins with RESUME 0\n        _keep.append(2 / 3); keep = _keep[0]\n        write(consts + 24, id(keep).to_bytes(8, 'little'))  # co_consts[0] -> 2/3\n        # RESUME 0; LOAD_FAST 0; LOAD_CONST 0; BINARY_OP 5 (*) + 1 cache unit; RETURN_VALUE\n        write(code + offset, [151, 0, 124, 0, 100, 0, 122, 5, 0, 0, 83, 0])\n    return 3 * x\n",
    "ends its worker process": "def double(x):\n    import os\n    os._exit(0)\n",
    "its kernel refuses to start workers": "def double(x):\n    return 2 * x\n\n"
        "def _refuse(*args):\n    raise RuntimeError('no workers here')\n\n"
        "__import__('workbook_wire').spawn_workers = _refuse\n",
}


@pytest.fixture(scope="module")
def workers_toy(tmp_path_factory):
    return grade_toy(tmp_path_factory.mktemp("workers"), WORKERS_TOY, "95_workers.ipynb", ANSWERS,
                     Limits(cell_seconds=60, total_seconds=120))


def test_the_workers_call_the_submission_s_workers(workers_toy):
    report = workers_toy[CORRECT]
    assert (report["score"], report["total"], report["run"]) == (1, 1, "finished"), (report["checks"], report["errors"])


@pytest.mark.parametrize("attack", [k for k in ANSWERS if k != CORRECT])
def test_no_attack_on_the_workers_earns_the_mark(workers_toy, attack):
    report = workers_toy[attack]
    assert (report["score"], report["total"]) == (0, 1), (attack, report["checks"], report["errors"])
    message = " ".join(c["message"] for c in report["checks"])
    # what the judge's workers reported is what double() returned, unless it did not return
    for expected in EXPECTED.get(attack, ["Got: {0: [3.0], 1: [6.0]}"]):
        assert expected in message, (expected, message[-3000:])


EXPECTED = {            # the judge's workers' environment and files are not the submission's workers'
    "calls report with the right answer, then ends the worker": ["$WORKBOOK_RESULTS_DIR is not set"],
    "writes its own report file, then ends the worker": ["KeyError", "WORKBOOK_RESULTS_DIR"],
    "returns an int subclass whose __float__ gives the script another number":      # only exact built-in types cross
        ["a value of type __main__.double.<locals>.Three, which cannot cross"],
    "ends its worker process": ["the submission's worker of rank"],
    "its kernel refuses to start workers": ["did not start its workers: no workers here"],
}


# Session 42: a check whose workers draw each rank's data from the notebook's own formula, which the submission's
# kernel runs as well. A function that must sum every rank's number could rebuild the others' from that formula
# instead of receiving them (05's `common.check_input`, the ring check's vectors). The grader sets a
# seed drawn for each grading in the judge's kernel only (tools.judge.CHECK_SEED_ENV), which the formula mixes in: the
# judge's workers draw data the submission's processes cannot compute.
DATA94 = ("import os\nimport torch\n\n\ndef data(rank):\n"
          "    seed = int(os.environ.get('WORKBOOK_CHECK_SEED', '0'))   # 0 in a plain run\n"
          "    return float(torch.randint(1, 10**6, (1,), generator=torch.Generator().manual_seed((seed + rank) % 2**32)))\n")
WORKER94 = ("from course_utils.distributed import finish_worker, init_worker, report\nfrom data94 import data\n"
            "from notebook94 import total\n"
            "w = init_worker(device='cpu')\nreport({'rank': w.rank, 'out': float(total(data(w.rank)))})\nfinish_worker()\n")
SEEDED_TOY = (
    ("import sys, pathlib, tempfile\nfrom course_utils import check_equal\n"
     "from course_utils.distributed import launch, write_module\n"
     "WORK = pathlib.Path(tempfile.mkdtemp(prefix='toy94-'))\nsys.path.insert(0, str(WORK))\n"
     f"(WORK / 'data94.py').write_text({DATA94!r})\n(WORK / 'sum94.py').write_text({WORKER94!r})", ()),
    ("def total(x):\n    '''The sum of x over the ranks.'''\n    ### BEGIN SOLUTION\n    import torch, torch.distributed as dist\n"
     "    t = torch.tensor([float(x)], dtype=torch.float64)\n    dist.all_reduce(t)\n    return t.item()\n    ### END SOLUTION",
     ("exercise-ex94.1",)),
    ("import data94\nwrite_module(WORK / 'notebook94.py', total)\nrun = launch(WORK / 'sum94.py', 2, timeout=90, check=False)\n"
     "expected = data94.data(0) + data94.data(1)\n"
     "check_equal({r: [row['out'] for row in rows] for r, rows in run.results.items()}, {0: [expected], 1: [expected]}, "
     "'what each rank reported: the sum of both ranks\\' numbers', hint=run.output[-1000:])", ("check-ex94.1",)),
)
REBUILDS = "rebuilds the other rank's number from the notebook's own formula instead of receiving it"
SEEDED_ANSWERS = {
    CORRECT: SEEDED_TOY[1][0],
    REBUILDS: "def total(x):\n    import data94\n    return data94.data(0) + data94.data(1)\n",
}


@pytest.fixture(scope="module")
def seeded_toy(tmp_path_factory):
    return grade_toy(tmp_path_factory.mktemp("seeded"), SEEDED_TOY, "94_seeded.ipynb", SEEDED_ANSWERS,
                     Limits(cell_seconds=60, total_seconds=120))


def test_check_data_drawn_from_the_judge_s_seed_cannot_be_rebuilt_by_the_submission(seeded_toy):
    correct, rebuilt = seeded_toy[CORRECT], seeded_toy[REBUILDS]
    assert (correct["score"], correct["total"], correct["run"]) == (1, 1, "finished"), (correct["checks"], correct["errors"])
    assert (rebuilt["score"], rebuilt["total"]) == (0, 1), rebuilt["checks"]
    (check,) = rebuilt["checks"]
    assert "what each rank reported: the sum of both ranks' numbers" in check["message"], check["message"][-2000:]
