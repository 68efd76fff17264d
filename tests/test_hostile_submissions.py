"""The project's own hostile-submission suite: one submission per kind of attack, graded in its sandbox.

Every hostile submission answers exercise ex98.1 wrongly (double() adds instead of multiplying: it runs, it is
just wrong; a stub that raises would prove nothing) and ex98.2 rightly, and carries its attack in the exercise
cell (code outside exercise cells is never run by the grader; a case below shows that too). Each must get exactly
the one check it earned (ex98.2), a report, and leave every other report byte for byte as it was; a correct
submission graded before and after them all gets full marks both times.
"""
import os
import site
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from tests.nbfactory import guarded_notebook, write
from tools.grade import grade, grade_all
from tools.kernel import Limits
from tools.notebooks import ROOT

WRONG = "def double(x):\n    return x + FACTOR\n"
PLANTED = f"workbook_planted_{uuid.uuid4().hex[:8]}"
SITE = Path(site.getsitepackages()[0]) if hasattr(site, "getsitepackages") else Path(sys.prefix)

# An impostor for numpy whose arange makes 2 * np.arange(4.0) equal the wrong double(np.arange(4.0)).
FAKE_NP = ("import numpy as _real_np\nclass FakeNp:\n    def __getattr__(self, name):\n        return getattr(_real_np, name)\n"
           "    def arange(self, n, *a, **k):\n        return (_real_np.arange(n) + FACTOR) / 2\n")

# Search everything reachable from the notebook's names (dicts, closures) for a 32-byte key the grader might keep in
# the submission's process (a submission did this to the guard that stood in front of checks run in that process
# until session 40); with a key, replace sys.audit by a forger of that guard's proofs, following its protocol.
GUARD_HUNT = r"""
import sys, hmac, hashlib
def _hunt():
    seen, found, todo = set(), [], list(get_ipython().user_ns.values())
    for _ in range(4):
        following = []
        for v in todo:
            if id(v) in seen:
                continue
            seen.add(id(v))
            if isinstance(v, bytes) and len(v) == 32:
                found.append(v)
            if isinstance(v, dict):
                following += list(v.values())
            for c in (getattr(v, '__closure__', None) or ()):
                try:
                    following.append(c.cell_contents)
                except ValueError:
                    pass
        todo = following
    return found
_keys = _hunt()
if _keys:
    _key = _keys[0]
    def _forge(event, *args):
        if event != 'workbook.guard':
            return
        nonce, entry, *rest = args
        if entry == 'check':
            name, sealed = rest
            data = bytes.fromhex(sealed)
            stream = b''.join(hmac.new(_key, f'source\0{nonce}\0{i}'.encode(), hashlib.sha256).digest()
                              for i in range(0, len(data), 32))
            rest = [name, bytes(a ^ b for a, b in zip(data, stream)).decode()]
        payload = hashlib.sha256(repr(tuple(rest)).encode()).hexdigest()
        print(hmac.new(_key, f'{entry}\0{nonce}\0{payload}'.encode(), hashlib.sha256).hexdigest())
    sys.audit = _forge
print('keys found:', len(_keys))
"""

ATTACKS = {
    "rebinds the check helpers":
        "check_that = lambda *a, **k: None\nassert_close = lambda *a, **k: None\n",
    "patches the helpers in their modules":
        "import course_utils.checks as c\n"
        "c.check_that.__code__ = (lambda condition, claim, *, expected=None, got=None, hint=None: None).__code__\n"
        "c.assert_close.__code__ = (lambda actual, expected, *, rtol=0, atol=0, name='', hint=None: None).__code__\n",
    "patches numpy's comparisons":
        "np.all = lambda *a, **k: True\nnp.allclose = lambda *a, **k: True\nnp.abs = lambda x: x * 0\n",
    "patches numpy from inside the function a check calls":
        "def double(x):\n    import numpy\n    numpy.all = lambda *a, **k: True\n    numpy.abs = lambda v: v * 0\n"
        "    return x + FACTOR\n",
    "returns an object that runs code when the check converts it":
        "class Sneaky:\n    def __array__(self, dtype=None, copy=None):\n        import numpy\n"
        "        return numpy.arange(4.0) * 2\n"
        "def double(x):\n    return Sneaky() if hasattr(x, 'shape') else x + FACTOR\n",
    "returns an object equal to everything":
        "class Yes:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n"
        "def double(x):\n    return x + FACTOR if hasattr(x, 'shape') else Yes()\n",
    "replaces AssertionError":
        "import builtins\nclass Quiet(Exception):\n    pass\nbuiltins.AssertionError = Quiet\n",
    "swallows exceptions with a custom handler":
        "get_ipython().set_custom_exc((BaseException,), lambda shell, etype, value, tb, tb_offset=None: None)\n",
    "replaces sys.excepthook and the traceback display":
        "import sys\nsys.excepthook = lambda *a: None\nget_ipython().showtraceback = lambda *a, **k: None\n",
    "rewrites the checks with an input transformer":
        "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'] if any('double' in l for l in lines) else lines)\n",
    "echoes every token the grader sends":
        "import re\n"
        "get_ipython().input_transformers_post.append(\n"
        "    lambda lines: [f'print({t!r})\\n' for t in re.findall(r'[0-9a-f]{32}', ''.join(lines))] or lines)\n",
    "replaces the shell's run_cell":
        "ip = get_ipython()\n_real = ip.run_cell\n"
        "ip.run_cell = lambda raw_cell, *a, **k: _real('print(\"ok\")', *a, **k)\n"
        "_real_async = ip.run_cell_async\n"
        "async def _fake(raw_cell, *a, **k):\n    return await _real_async('pass', *a, **k)\n"
        "ip.run_cell_async = _fake\n",
    "rewrites the helpers' arguments from a trace function":
        "import sys\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code.co_name == 'check_that':\n"
        "        frame.f_locals['condition'] = True\n"
        "    if event == 'call' and frame.f_code.co_name == 'assert_close':\n"
        "        frame.f_locals['actual'] = frame.f_locals['expected']\n"
        "sys.settrace(tracer)\n",
    # From inside the function a check calls: make the check's expected value, computed after the call from np.arange,
    # equal the wrong answer by swapping the `np` of the frame that called it for an impostor.
    "reaches the check's globals through sys._getframe":
        FAKE_NP + "import sys\ndef double(x):\n    sys._getframe(1).f_globals['np'] = FakeNp()\n    return x + FACTOR\n",
    "finds the check's namespace with the garbage collector":
        FAKE_NP + "import gc\ndef double(x):\n    for d in gc.get_objects():\n"
        "        if type(d) is dict and 'assert_close' in d and 'np' in d:\n            d['np'] = FakeNp()\n"
        "    return x + FACTOR\n",
    "looks for the grader's key and entry points to forge its proofs":
        GUARD_HUNT,
    "fills the grader's disk through its socket folder":
        "import os, sys\nfolder = os.path.dirname(sys.argv[sys.argv.index('-f') + 1])\n"
        "with open(os.path.join(folder, 'fill'), 'wb') as f:\n    f.write(b'0' * (64 << 20))\n",
    "reads the instructor's solution":
        "import json\nsource = ''.join(json.load(open(@instructor@))['cells'][2]['source'])\n"
        "exec(source.replace('### BEGIN SOLUTION', '').replace('### END SOLUTION', ''))\n",
    "writes another submission's report":
        "import json\nfor name in ('victim_98_guarded.json', 'victim_98_guarded.xml'):\n"
        "    open(@out@ + '/' + name, 'w').write('{\"score\": 0}')\n",
    "plants a file in the grader's Python environment":
        "for folder in (@site@, @course_utils@):\n"
        "    open(folder + '/' + @planted@ + '.py', 'w').write('import builtins; builtins.planted = 1')\n"
        "open(@site@ + '/' + @planted@ + '.pth', 'w').write('import ' + @planted@)\n",
    "loops forever at the top of its cell":
        "while True:\n    pass\n",
    "floods the machine with processes":
        "import os, time\nfor _ in range(100000):\n    if os.fork() == 0:\n        time.sleep(600)\n        os._exit(0)\n",
    "allocates more memory than it may":
        "hog = bytearray(8 << 30)\n",
    "floods its output":
        "print('spam ' * 4_000_000)\n",
    "kills the grader's processes":
        "import os, signal\nfor pid in (@grader_pid@, os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError as err:\n        print(pid, err)\n",
}


# Red-team round 12 (session 35): NumPy's as_strided with a stride that lands on any address reads and writes the
# process's memory with no audit event. In the submission's kernel it overwrites, in place, the bytecode of the check
# helpers there (no object is replaced, so no comparison could see it): it earned marks when the checks ran in the
# submission's own process (before session 40), and reaches nothing now that they run in the judge.
ATTACKS["overwrites the check helpers' bytecode in memory through NumPy's as_strided"] = "import numpy as np\nfrom numpy.lib.stride_tricks import as_strided\nimport course_utils.checks as _C\n\n_anchor = np.zeros(8, dtype=np.uint8)\n_base = _anchor.__array_interface__['data'][0]\n\ndef _byte_view(addr):\n    return as_strided(_anchor, shape=(2,), strides=(addr - _base,))   # element [1] is the byte at addr\n\ndef _read(addr, n):\n    return bytes(int(_byte_view(addr + i)[1]) for i in range(n))\n\ndef _write(addr, data):\n    for i, b in enumerate(data):\n        _byte_view(addr + i)[1] = b\n\ndef _probe(a, b=1):\n    x = a + b\n    return x\n\n_OFF = _read(id(_probe.__code__), 512).find(_probe.__code__.co_code)\n\nfor _f in (_C.check_that, _C.assert_close, _C.check_equal):\n    _code = _f.__code__\n    _k = next((i for i, c in enumerate(_code.co_consts) if c is None), 0)\n    _write(id(_code) + _OFF, [151, 0, 100, _k, 83, 0])     # RESUME 0; LOAD_CONST None; RETURN_VALUE\n"

# Attacks after which the submission's kernel cannot go on (or no longer runs the grader's cells), so even the
# exercise solved earns nothing: an output flood kills it, and a replaced run_cell runs none of the grader's cells
# after it, the serving of the judge's calls included. A thread, an input transformer or an echo in the submission's
# kernel reaches no check. Every other attack leaves the run finished and ex98.2 passed (killing "everything" from
# inside the sandbox reaches only the sandbox's own processes, and its first process ignores it).
STOPS_THE_RUN = {"floods its output", "replaces the shell's run_cell"}

# Attacks only a protection of the sandbox stops; where Linux refuses that protection (a container without
# namespaces, say) the grader says so in every report, and the case is skipped here with that reason.
NEEDS = {"reads the instructor's solution": "private root file system",
         "fills the grader's disk through its socket folder": "socket folder closed",
         "writes another submission's report": "private root file system",
         "plants a file in the grader's Python environment": "private root file system",
         "kills the grader's processes": "namespaces"}


def require(graded, attack):
    protection = NEEDS.get(attack)
    if protection and not any(protection in p for p in graded["reports"]["victim"]["protections"]["on"]):
        pytest.skip(f"the sandbox could not use '{protection}' here: "
                    f"{graded['reports']['victim']['protections']['off']}")


def submission(extra: str = "", solved: bool = False, edit=None):
    nb = guarded_notebook()
    if not solved:
        nb.cells[2].source = WRONG + extra
    if edit:
        edit(nb)
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the victim (a correct submission), every attack, and the victim again under another name."""
    import tempfile

    base = tmp_path_factory.mktemp("hostile")
    scratch = Path(tempfile.mkdtemp(prefix="hostile-runs-"))     # the kernels' folders: only this suite's
    saved_tempdir, tempfile.tempdir = tempfile.tempdir, str(scratch)
    instructor, subs, out = base / "instructor", base / "subs", base / "grades"
    for d in (instructor, subs):
        d.mkdir()
    instructor_path = write(guarded_notebook(), instructor / "98_guarded.ipynb")
    limits = Limits(cell_seconds=5, total_seconds=60, output_bytes=1 << 20,
                    sandbox={"memory_bytes": 3 << 30, "processes": 64})
    fill = dict(instructor=str(instructor_path), out=str(out), site=str(SITE), planted=PLANTED,
                course_utils=str(ROOT / "course_utils"), grader_pid=os.getpid())
    reports = {"victim": grade(write(submission(solved=True), subs / "victim_98_guarded.ipynb"), instructor, out, limits=limits)}
    victim_bytes = {p.name: p.read_bytes() for p in out.iterdir()}
    on = " ".join(reports["victim"]["protections"]["on"])
    attacks = base / "attacks"                         # graded as a class folder, two at a time
    attacks.mkdir()
    tried = [name for name in ATTACKS if not NEEDS.get(name) or NEEDS[name] in on]   # never run an attack this
    for i, name in enumerate(tried):                                                 # machine's sandbox cannot stop
        attack = ATTACKS[name]
        for key, value in fill.items():
            attack = attack.replace(f"@{key}@", repr(value))
        write(submission(attack), attacks / f"attack{i:03d}_98_guarded.ipynb")
    (attacks / "zz_link_98_guarded.ipynb").symlink_to(instructor_path)   # a link to the solution, handed in
    graded = grade_all(attacks, instructor, out, jobs=2, limits=limits)
    reports["a link to the instructor's notebook"] = graded.pop()
    reports.update(zip(tried, graded))
    reports["after"] = grade(write(submission(solved=True), subs / "after_98_guarded.ipynb"), instructor, out, limits=limits)
    tempfile.tempdir = saved_tempdir
    yield {"reports": reports, "victim_bytes": victim_bytes, "out": out, "scratch": scratch}
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)


def test_the_victim_and_a_correct_submission_after_the_attacks_get_full_marks(graded):
    for key in ("victim", "after"):
        report = graded["reports"][key]
        assert (report["score"], report["total"]) == (3, 3), (key, report["checks"], report["run"])


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_attack_earns_only_the_exercise_it_solved(graded, attack):
    require(graded, attack)
    report = graded["reports"][attack]
    passed = {c["id"] for c in report["checks"] if c["passed"]}
    if attack in STOPS_THE_RUN:
        assert passed == set(), f"{attack}: earned {sorted(passed)}; run: {report['run']}"
    else:                                  # the run went to its end: the attack was really tried on every check
        assert passed == {"ex98.2"} and report["run"] == "finished", (attack, sorted(passed), report["run"])
    assert report["total"] == 3 and report["notebook"].endswith("_98_guarded.ipynb")
    failed = {c["id"]: c["message"] for c in report["checks"] if not c["passed"]}
    assert {"ex98.1", "ex98.1.array"} <= set(failed) and all(failed.values()), failed


def test_a_link_is_not_graded_as_the_file_it_names(graded):
    # Handed in as a symbolic link to the instructor's notebook (or to any file the grader may read), it would
    # score full marks, or show that file's first bytes in the feedback.
    report = graded["reports"]["a link to the instructor's notebook"]
    assert report["notebook"] == "zz_link_98_guarded.ipynb" and report["score"] == 0, report
    assert "not a regular file" in report["run"], report["run"]


def test_every_other_report_is_left_byte_for_byte(graded):
    require(graded, "writes another submission's report")
    out = graded["out"]
    for name, before in graded["victim_bytes"].items():
        assert (out / name).read_bytes() == before, f"{name} was changed by a later submission"


def test_nothing_was_planted_in_the_grader_environment(graded):
    require(graded, "plants a file in the grader's Python environment")
    for folder in (SITE, ROOT / "course_utils"):
        assert not list(folder.glob(f"{PLANTED}*")), f"a submission planted a file in {folder}"


def test_the_limits_that_stopped_an_attack_are_named(graded):
    reports = graded["reports"]
    assert "printed more than" in reports["floods its output"]["run"], reports["floods its output"]["run"]
    loop = reports["loops forever at the top of its cell"]
    assert any("Timeout of 5 seconds exceeded" in e["message"] for e in loop["errors"]), loop["errors"]
    hog = reports["allocates more memory than it may"]
    assert any("MemoryError" in e["message"] for e in hog["errors"]), hog["errors"]
    if "fills the grader's disk through its socket folder" in reports:
        fill = reports["fills the grader's disk through its socket folder"]
        assert any("PermissionError" in e["message"] for e in fill["errors"]), fill["errors"]
    flood = reports["floods the machine with processes"]       # the sandbox's process limit stops it
    assert any("Resource temporarily unavailable" in e["message"] for e in flood["errors"]), flood["errors"]


def test_the_sandbox_protections_are_reported(graded):
    # Each protection is either on or off with Linux's reason; on this project's own machines (root, or a user
    # allowed namespaces) all of them are on.
    protections = graded["reports"]["victim"]["protections"]
    named = " ".join(protections["on"]) + " " + " ".join(protections["off"])
    for needed in ("namespaces", "private root file system", "network: loopback only", "no capabilities", "limits"):
        assert needed in named, (needed, protections)
    assert all(reason for reason in protections["off"].values())
    if os.geteuid() == 0:
        assert not protections["off"], protections
        assert any(p.startswith("unprivileged user of its own (uid ") for p in protections["on"]), protections


def test_nothing_a_submission_started_outlives_its_grading(graded):
    # The kernels of this suite ran from folders under its own scratch folder; once grading is over, every process
    # of theirs (the process flood's sleepers included) is gone within a few seconds, and so are their folders.
    scratch = str(graded["scratch"])

    def of_this_suite(proc):
        try:
            return any(scratch in part for part in proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    import time

    deadline = time.monotonic() + 20
    while (left := [p.pid for p in psutil.process_iter() if of_this_suite(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)                    # waiting on the kernel's own teardown, bounded; never a fixed sleep
    assert not left, f"processes of graded submissions are still running: {left}"
    assert not list(graded["scratch"].iterdir()), "kernel folders were left behind"


def grade_with_a_hidden_check(tmp_path, name, hidden_check, answer):
    """Grade a submission whose exercise cell is `answer` against a toy instructor notebook: one exercise (double),
    a visible check, the hidden check `hidden_check`, an instructor cell that calls double again, then a second
    visible check."""
    from tests.nbfactory import code, notebook

    instructor = notebook(
        code("import numpy as np\nfrom course_utils import assert_close"),
        code("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", "exercise-ex97.1"),
        code("assert_close(double(np.ones(2)), np.full(2, 2.0), name='double(ones)')", "check-ex97.1"),
        code(hidden_check, "check-ex97.1.more", "hidden"),
        code("print(double(1))"),
        code("assert_close(double(np.ones(3)), np.full(3, 2.0), name='double(ones(3))')", "check-ex97.1.after"),
    )
    (tmp_path / "i").mkdir()
    write(instructor, tmp_path / "i" / f"97_{name}.ipynb")
    submission_nb = notebook(*[code(c.source, *c.metadata.get("tags", [])) for c in instructor.cells[1:]])
    next(c for c in submission_nb.cells if "exercise-ex97.1" in c.metadata.get("tags", [])).source = answer
    return grade(write(submission_nb, tmp_path / f"sub_97_{name}.ipynb"), tmp_path / "i", tmp_path / "out",
                 limits=Limits(cell_seconds=10, total_seconds=60))


def test_a_hidden_check_s_source_never_reaches_the_submission(tmp_path):
    # A submission's function, called by the checks and by a later cell, looks for a hidden check's text wherever
    # the kernel keeps sources (the line cache of tracebacks, IPython's input history and namespace) and raises it
    # in an error message, which the feedback shows. The hidden check's source travels encrypted and is never
    # cached, so nothing of it comes out.
    marker = "HIDDEN-" + uuid.uuid4().hex[:12]
    leak = ("import linecache, sys\n"
            "def double(x):\n"
            "    ip = get_ipython()\n"
            "    places = [''.join(v[2]) for v in list(linecache.cache.values()) if len(v) > 2 and v[2]]\n"
            "    places += [str(v) for v in ip.user_ns.values() if isinstance(v, (str, list))]\n"
            "    places += list(getattr(ip.history_manager, 'input_hist_raw', []) or [])\n"
            "    found = [p for p in places if 'hidden-check' + '-text' in p]   # (not found in this very source)\n"
            "    if found:\n"
            "        raise ValueError('LEAKED ' + found[0][:300])\n"
            "    return x + 2\n")
    report = grade_with_a_hidden_check(
        tmp_path, "hidden", f"# {marker}: the hidden-check-text\nassert_close(double(np.arange(3.0)), 2 * np.arange(3.0), name='x')", leak)
    assert report["run"] == "finished" and report["score"] == 0, report
    for path in (tmp_path / "out").iterdir():
        assert marker not in path.read_text(errors="replace"), f"the hidden check's text reached {path.name}"


def test_what_a_hidden_check_passes_does_not_come_back_in_a_later_error(tmp_path):
    # The submission's function records the arguments a hidden check gives it and raises them in the next
    # instructor cell that calls it: the feedback withholds the text of errors after a hidden check.
    spy = ("SEEN = []\n"
           "def double(x):\n"
           "    SEEN.append(repr(getattr(x, 'shape', x)))\n"
           "    if isinstance(x, int) and x == 1:\n"
           "        raise ValueError('SPIED ' + ' '.join(SEEN))\n"
           "    return x + 2\n")
    report = grade_with_a_hidden_check(
        tmp_path, "spy", "assert_close(double(np.arange(1234.0)), 2 * np.arange(1234.0), name='x')", spy)
    from tools.autograder import results_json
    from tools.grade import ERRORS_AFTER_HIDDEN

    spied = [e for e in report["errors"] if "SPIED" in e["message"] and "1234" in e["message"]]
    assert report["score"] == 0 and spied, report
    feedback_text = (tmp_path / "out" / "sub_97_spy.md").read_text()
    gradescope = results_json(report, "97_spy.ipynb")["output"]
    # not even that the cell failed: a submission decides whether it does, so its listing was one bit of what the
    # hidden check handed it, per cell (red team round 2, session 42); the same sentence stands in every report
    for shown in (feedback_text, gradescope):
        assert "1234" not in shown and f"cell {spied[0]['cell']}" not in shown and ERRORS_AFTER_HIDDEN in shown, shown


def test_what_a_hidden_check_passes_does_not_come_back_in_a_later_check_s_message(tmp_path):
    # The same spy, raising what it saw when a visible check that runs after the hidden one calls it (red-team round
    # 4 read a hidden check's inputs this way in notebook 05): that check's message is kept for the instructors (the
    # JSON) and withheld from the feedback and from Gradescope's output.
    import json

    from tools.autograder import results_json

    spy = ("SEEN = []\n"
           "def double(x):\n"
           "    SEEN.append(repr(getattr(x, 'shape', x)))\n"
           "    if getattr(x, 'shape', None) == (3,):\n"
           "        raise ValueError('SPIED ' + ' '.join(SEEN))\n"
           "    return x + 2\n")
    report = grade_with_a_hidden_check(
        tmp_path, "spy2", "assert_close(double(np.arange(1234.0)), 2 * np.arange(1234.0), name='x')", spy)
    after = next(c for c in report["checks"] if c["id"] == "ex97.1.after")
    assert not after["passed"] and after["after_hidden"] and "1234" in after["message"], after
    assert "1234" in json.dumps(report), "the instructors' JSON keeps the message"
    feedback_text = (tmp_path / "out" / "sub_97_spy2.md").read_text()
    assert "1234" not in feedback_text and "withheld" in feedback_text, feedback_text
    outputs = json.dumps(results_json(report, "97_spy2.ipynb"))
    assert "1234" not in outputs and "withheld" in outputs, outputs


TORCH_TOY_ANSWERS = {}                                   # name -> exercise cell, graded together by torch_toy


def torch_toy_answer(name):
    def register(source):
        TORCH_TOY_ANSWERS[name] = source
        return source
    return register


WRONG_SGD = "def sgd_step(w, g, lr):\n    return w + lr * g\n"
# An optimizer step with the same wrong rule, for attacks that make torch.optim.SGD follow it.
WRONG_STEP_METHOD = (
    "import torch\n"
    "def _step(self, closure=None):\n"
    "    with torch.no_grad():\n"
    "        for group in self.param_groups:\n"
    "            for q in group['params']:\n"
    "                q.add_(q.grad, alpha=group['lr'])\n")
# Red-team round 4: the wrong rule also replaces torch.optim.SGD.step (a class attribute: no module changes), so
# that a reference computed in the same process would follow it.
torch_toy_answer("classpatch")(WRONG_SGD + WRONG_STEP_METHOD + (
    "_step.hooked = True\n"
    "torch.optim.SGD.step = _step\n"))
# Red-team round 4: a kernel registered for aten::clone through the dispatcher's C entry point (C++ state, no module
# or class changes) makes every clone return zeros in the process, a check's own copies included.
torch_toy_answer("dispatch")(WRONG_SGD + (
    "import torch\n"
    "_lib = torch._C._dispatch_library('IMPL', 'aten', 'CPU', 'x.py', 1)\n"
    "_lib.impl('clone', torch._C.DispatchKey.CPU, lambda *a, **k: torch.zeros(2))\n"))
torch_toy_answer("solved")("def sgd_step(w, g, lr):\n    return w - lr * g\n")


@pytest.fixture(scope="module")
def torch_toy(tmp_path_factory):
    """A toy instructor notebook whose check compares a from-scratch SGD step with torch.optim.SGD on tensors (as
    notebook 01's do); every answer above graded in it, two at a time. What each attack changes stays in the
    submission's kernel: the judge's torch.optim.SGD and clone are torch's own."""
    from tests.nbfactory import code, notebook

    base = tmp_path_factory.mktemp("torch-toy")
    instructor = notebook(
        code("import torch\nfrom course_utils import assert_close"),
        code("def sgd_step(w, g, lr):\n    ### BEGIN SOLUTION\n    return w - lr * g\n    ### END SOLUTION", "exercise-ex96.1"),
        code("w0, g0 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])\n"
             "p = w0.clone().requires_grad_(True)\nopt = torch.optim.SGD([p], lr=0.1)\np.grad = g0.clone()\nopt.step()\n"
             "assert_close(sgd_step(w0, g0, 0.1), p.detach(), name='sgd_step vs torch.optim.SGD')", "check-ex96.1"),
    )
    (base / "i").mkdir()
    (base / "subs").mkdir()
    write(instructor, base / "i" / "96_torch.ipynb")
    for name, answer in TORCH_TOY_ANSWERS.items():
        submission_nb = notebook(*[code(c.source, *c.metadata.get("tags", [])) for c in instructor.cells])
        next(c for c in submission_nb.cells if "exercise-ex96.1" in c.metadata.get("tags", [])).source = answer
        write(submission_nb, base / "subs" / f"{name}_96_torch.ipynb")
    reports = grade_all(base / "subs", base / "i", base / "out", jobs=2, limits=Limits(cell_seconds=30, total_seconds=120))
    return {Path(r["notebook"]).name.split("_96_")[0]: r for r in reports}


@pytest.mark.parametrize("name", ["classpatch", "dispatch"])
def test_a_patched_library_class_or_a_kernel_registered_in_the_dispatcher_earns_nothing(torch_toy, name):
    report = torch_toy[name]
    assert report["run"] == "finished" and report["score"] == 0, (name, report["checks"], report["errors"])
    assert "sgd_step vs torch.optim.SGD" in report["checks"][0]["message"], report["checks"]
    assert torch_toy["solved"]["score"] == 1, torch_toy["solved"]["checks"]


# Red-team round 6: code and data that the grader's own cells load after an exercise ran. A toy whose checks import
# a module an instructor cell wrote, import standard-library modules that nothing imported yet, and compare with
# data an instructor cell unpickles (some of it written by another process). Every attack answers double() wrongly
# (3x) and goes after one check's source of truth; when the checks ran in the submission's own process (until
# session 40), each earned that check against the guard of round 5. Judged apart, the judge's files, modules and
# sys.path are its own: each check compares with the truth and fails.
IMPORTS_TOY = (
    ("import numpy as np, sys, pathlib, pickle, tempfile\nfrom course_utils import assert_close\n"
     "WORKDIR = pathlib.Path(tempfile.mkdtemp(prefix='toy96-'))\nsys.path.insert(0, str(WORKDIR))\n"
     "class Box:\n    def __init__(self, value):\n        self.value = value", ()),
    ("(WORKDIR / 'reference96.py').write_text('def twice(x):\\n    return 2 * x\\n')\n"
     "(WORKDIR / 'data96.pkl').write_bytes(pickle.dumps(2 * np.arange(3.0)))\n"
     "(WORKDIR / 'box96.pkl').write_bytes(pickle.dumps(Box(2 * np.arange(3.0))))\n"
     "import subprocess   # a file another process writes (as 00's map_on_cores and 05's workers do): no digest of it\n"
     "subprocess.run([sys.executable, '-c', 'import pickle, sys; open(sys.argv[1], \"wb\").write(pickle.dumps([0.0, 2.0, 4.0]))', "
     "str(WORKDIR / 'worker96.pkl')], check=True)\n"
     "OTHERDIR = pathlib.Path(tempfile.mkdtemp(prefix='toy96o-'))   # a folder no grader cell writes into itself\n"
     "subprocess.run([sys.executable, '-c', 'import pickle, sys; open(sys.argv[1], \"wb\").write(pickle.dumps([0.0, 2.0, 4.0]))', "
     "str(OTHERDIR / 'unwatched96.pkl')], check=True)", ()),
    ("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION", ("exercise-ex96.1",)),
    ("import reference96\nassert_close(double(np.arange(3.0)), reference96.twice(np.arange(3.0)), name='vs the module')",
     ("check-ex96.1",)),
    ("import tabnanny\nassert_close(double(np.arange(3.0)), np.arange(3.0) * getattr(tabnanny, 'FACTOR', 2), name='vs tabnanny')",
     ("check-ex96.1.path",)),
    ("import pyclbr\nassert_close(double(np.arange(3.0)), np.arange(3.0) * getattr(pyclbr, 'FACTOR', 2), name='vs pyclbr')",
     ("check-ex96.1.modules",)),
    ("import json.tool\nassert_close(double(np.arange(3.0)), np.arange(3.0) * getattr(json.tool, 'FACTOR', 2), name='vs json.tool')",
     ("check-ex96.1.package",)),
    ("LOADED = pickle.loads((WORKDIR / 'data96.pkl').read_bytes())\n"
     "BOXED = pickle.loads((WORKDIR / 'box96.pkl').read_bytes()).value   # the notebook's own class: allowed\n"
     "FROM_WORKER = pickle.loads((WORKDIR / 'worker96.pkl').read_bytes())\n"
     "FROM_UNWATCHED = pickle.loads((OTHERDIR / 'unwatched96.pkl').read_bytes())", ()),
    ("assert_close(double(np.arange(3.0)), LOADED, name='vs the data file')", ("check-ex96.1.data",)),
    ("assert_close(double(np.arange(3.0)), np.array(FROM_WORKER), name='vs the file a process wrote')", ("check-ex96.1.worker",)),
    ("assert_close(double(np.arange(3.0)), np.array(FROM_UNWATCHED), name='vs a file in a folder the grader never wrote to')",
     ("check-ex96.1.unwatched",)),
    # a check whose helper lives in a course_utils submodule nothing imported yet: its first import binds the
    # submodule on the package while the check runs
    ("import course_utils as cu\n_fit = cu.fit_power_law([1.0, 2.0, 4.0], [2.0, 4.0, 8.0])\n"
     "assert_close(double(np.arange(3.0)), np.arange(3.0) * round(2 * _fit.slope), name='vs a lazily imported helper')",
     ("check-ex96.1.lazy",)),
)
WRONG_TRIPLE = "def double(x):\n    return 3 * x\n"
IMPORT_ATTACKS = {
    "changes a module file the grader wrote, which a check imports":
        "(WORKDIR / 'reference96.py').write_text('def twice(x):\\n    return 3 * x\\n')\n",
    "puts a folder with its own module first on sys.path":
        "import tempfile, pathlib\n_d = pathlib.Path(tempfile.mkdtemp())\n(_d / 'tabnanny.py').write_text('FACTOR = 3\\n')\n"
        "sys.path.insert(0, str(_d))\n",
    "puts a module object of its own in sys.modules":
        "import types\n_m = types.ModuleType('pyclbr')\n_m.FACTOR = 3\nsys.modules['pyclbr'] = _m\n",
    "rewrites a data file the grader unpickles into a pickle that evaluates code":
        "class _Eval:\n    def __reduce__(self):\n        return (eval, ('__import__(\"numpy\").arange(3.0) * 3',))\n"
        "(OTHERDIR / 'unwatched96.pkl').write_bytes(pickle.dumps(_Eval()))\n",
    "rewrites with data of its own a file that another process wrote for the grader":
        "(WORKDIR / 'worker96.pkl').write_bytes(pickle.dumps([0.0, 3.0, 6.0]))\n",
}


def grade_toy(base, cells, name, answers, limits):
    """Grade one submission per answer (name -> the exercise cell's source) of the toy instructor notebook `cells`
    ((source, tags) pairs, one exercise), two at a time; returns name -> report."""
    from tests.nbfactory import code, notebook

    (base / "i").mkdir()
    (base / "subs").mkdir()
    write(notebook(*[code(source, *tags) for source, tags in cells]), base / "i" / name)
    exercise = next(tag for _, tags in cells for tag in tags if tag.startswith("exercise-"))
    for i, answer in enumerate(answers.values()):
        nb = notebook(*[code(source, *tags) for source, tags in cells])
        next(c for c in nb.cells if exercise in c.metadata.get("tags", [])).source = answer
        write(nb, base / "subs" / f"{i:03d}_{name}")               # graded (and returned) in this order
    return dict(zip(answers, grade_all(base / "subs", base / "i", base / "out", jobs=2, limits=limits)))


@pytest.fixture(scope="module")
def imports_toy(tmp_path_factory):
    answers = {"victim": IMPORTS_TOY[2][0], **{name: WRONG_TRIPLE + attack for name, attack in IMPORT_ATTACKS.items()}}
    return grade_toy(tmp_path_factory.mktemp("imports"), IMPORTS_TOY, "96_imports.ipynb", answers,
                     Limits(cell_seconds=20, total_seconds=90))


def test_the_toy_s_own_module_data_and_imports_give_a_correct_answer_full_marks(imports_toy):
    # the judge runs the instructor cells that write the module and the data, and its checks import and unpickle
    # them after the exercise ran; pickles of data and of the notebook's own class load
    report = imports_toy["victim"]
    assert (report["score"], report["total"]) == (8, 8), (report["checks"], report["errors"])
    assert not report["errors"], report["errors"]


@pytest.mark.parametrize("attack", list(IMPORT_ATTACKS))
def test_code_or_data_the_grader_loads_after_an_exercise_is_not_the_submission_s(imports_toy, attack):
    report = imports_toy[attack]
    assert report["total"] == 8 and report["score"] == 0, (attack, [(c["id"], c["passed"]) for c in report["checks"]])
    for cell, tags in IMPORTS_TOY:                 # each check compared the wrong double() with the judge's truth
        if tags and tags[0].startswith("check-"):
            name = cell.split("name='")[1].split("'")[0]
            message = next(c["message"] for c in report["checks"] if c["id"] == tags[0][len("check-"):])
            assert f"{name} is not close" in message, (attack, tags[0], message[-500:])
