"""course_utils.parallel.map_on_cores: independent runs side by side in forked children, or in order in-process."""
import os
import sys

import pytest
import torch

import course_utils.parallel as parallel
from course_utils.parallel import ChildFailed, map_on_cores

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux")


@linux_only
def test_results_in_order_from_children_with_one_thread_each():
    offset = 100                                              # a closure over a local: nothing is pickled but results
    threads = torch.get_num_threads()
    torch.set_num_threads(2)                      # as on a 2-core machine (`make test` runs this on one thread)
    try:
        out = map_on_cores(lambda x: (x * x + offset, os.getpid(), torch.get_num_threads()), range(7), processes=3)
    finally:
        torch.set_num_threads(threads)
    assert [r[0] for r in out] == [x * x + 100 for x in range(7)]
    assert os.getpid() not in {r[1] for r in out} and len({r[1] for r in out}) == 7, "one fresh child per item"
    assert {r[2] for r in out} == {1}


def test_one_process_runs_in_order_here():
    seen = []
    out = map_on_cores(lambda x: seen.append(x) or os.getpid(), "abc", processes=1)
    assert out == [os.getpid()] * 3 and seen == ["a", "b", "c"]


def test_no_fork_while_a_cuda_context_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert not parallel.fork_is_safe()
    assert map_on_cores(lambda x: os.getpid(), [1, 2], processes=2) == [os.getpid()] * 2


@linux_only
def test_a_failing_item_is_raised_here_with_its_traceback_and_no_child_is_left():
    import psutil

    def fn(x):
        if x == 3:
            raise ValueError(f"bad item {x}")
        return x

    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(ChildFailed, match=r"(?s)item 3 \(3\) failed in its child process:\n.*ValueError: bad item 3"):
        map_on_cores(fn, range(6), processes=2)
    left = [p for p in psutil.Process().children() if p.pid not in before]
    assert not left, left


@linux_only
def test_what_a_child_prints_is_printed_here(capsys):
    assert map_on_cores(lambda x: print(f"item {x}") or x, [1, 2], processes=2) == [1, 2]
    assert capsys.readouterr().out == "item 1\nitem 2\n"


@linux_only
def test_a_result_that_cannot_come_back_and_a_killed_child_are_errors():
    with pytest.raises(ChildFailed, match="(?s)item 0 .* failed in its child process:.*pickle"):
        map_on_cores(lambda x: (lambda: x), [0, 1], processes=2)
    with pytest.raises(ChildFailed, match=r"item 1 \(1\) ended with exit code -9 without a result"):
        map_on_cores(lambda x: os.kill(os.getpid(), 9) if x == 1 else x, [0, 1], processes=2)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_process_counts(bad):
    with pytest.raises(ValueError, match="processes must be a positive integer"):
        map_on_cores(abs, [1, 2], processes=bad)


@linux_only
def test_children_inherit_what_torch_imports_on_first_use_and_nothing_is_imported_without_torch():
    # The first optimizer step imports torch._dynamo (2.2 s of CPU here): once in the parent, not once per child.
    import subprocess

    def children_see(setup, probe):
        code = (f"{setup}\nimport sys\nfrom course_utils.parallel import map_on_cores\n"
                f"print(map_on_cores(lambda _: {probe!r} in sys.modules, range(2), processes=2))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert children_see("import torch", "torch._dynamo") == "[True, True]"
    assert children_see("", "torch") == "[False, False]", "map_on_cores must not import torch itself"
