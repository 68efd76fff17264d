"""The workers toy of tests/test_hostile_workers.py, judged apart (tools/judge.py; notebook 05 since session 39).

The judge's workers run the script, and each call of double() crosses to a worker of the submission's of the same
rank, forked by the submission's kernel. What the function does in its own process, memory writes included, cannot
reach the script that reports. In a file of its own so that pytest-xdist can grade it beside the one-kernel toy.
"""
import pytest

from tests.test_hostile_workers import KNOWN_OPEN_WORKERS, WORKERS_TOY, WRONG_TRIPLE_95
from tools.kernel import Limits

CORRECT = "answers from a group of its own, with the sum of the ranks (collectives among its workers)"
APART_ANSWERS = {
    CORRECT: "def double(x):\n    import torch, torch.distributed as dist\n    t = torch.tensor([float(x)])\n"
             "    dist.all_reduce(t)\n    return t.item() - 3 + 2 * x if dist.get_world_size() == 2 else -1\n",
    "wrong": WRONG_TRIPLE_95,
    **KNOWN_OPEN_WORKERS,
    "ends its worker process": "def double(x):\n    import os\n    os._exit(0)\n",
    "its kernel refuses to start workers": "def double(x):\n    return 2 * x\n\n"
        "def _refuse(*args):\n    raise RuntimeError('no workers here')\n\n"
        "__import__('workbook_wire').spawn_workers = _refuse\n",
}


@pytest.fixture(scope="module")
def workers_toy_apart(tmp_path_factory):
    from tests.nbfactory import code, notebook, write
    from tools.grade import grade_all

    base = tmp_path_factory.mktemp("workers_apart")

    def toy():
        nb = notebook(*[code(source, *tags) for source, tags in WORKERS_TOY])
        nb.metadata["workbook"] = {"judge": "apart"}
        return nb

    (base / "i").mkdir()
    (base / "subs").mkdir()
    write(toy(), base / "i" / "95_workers.ipynb")
    for i, answer in enumerate(APART_ANSWERS.values()):
        nb = toy()
        next(c for c in nb.cells if "exercise-ex95.1" in c.metadata.get("tags", [])).source = answer
        write(nb, base / "subs" / f"{i:03d}_95_workers.ipynb")
    reports = grade_all(base / "subs", base / "i", base / "out", jobs=2, limits=Limits(cell_seconds=60, total_seconds=120))
    return dict(zip(APART_ANSWERS, reports))


def test_judged_apart_the_workers_call_the_submission_s_workers(workers_toy_apart):
    report = workers_toy_apart[CORRECT]
    assert (report["score"], report["total"], report["run"]) == (1, 1, "finished"), (report["checks"], report["errors"])


@pytest.mark.parametrize("attack", [k for k in APART_ANSWERS if k != CORRECT])
def test_judged_apart_no_attack_on_the_workers_earns_the_mark(workers_toy_apart, attack):
    report = workers_toy_apart[attack]
    assert (report["score"], report["total"]) == (0, 1), (attack, report["checks"], report["errors"])
    message = " ".join(c["message"] for c in report["checks"])
    expected = {
        "ends its worker process": "the submission's worker of rank",
        "its kernel refuses to start workers": "did not start its workers: no workers here",
    }.get(attack, "Got: {0: [3.0], 1: [6.0]}")    # what the judge's workers reported is what double() returned
    assert expected in message, message[-3000:]
