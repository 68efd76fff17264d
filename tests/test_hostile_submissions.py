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
    "shadows the builtins the grader's code calls":
        "vars = lambda *a: {}\nsetattr = getattr = lambda *a: None\nlen = lambda x: 0\n"
        "np.all = lambda *a, **k: True\n",
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


# Attacks after which the kernel cannot go on (or no longer runs the grader's code), so even the exercise solved
# earns nothing; every other attack leaves the run finished and ex98.2 passed (killing "everything" from inside the
# sandbox reaches only the sandbox's own processes, and its first process ignores it).
STOPS_THE_RUN = {"floods its output", "echoes every token the grader sends", "replaces the shell's run_cell",
                 "rewrites the checks with an input transformer"}

# Attacks only a protection of the sandbox stops; where Linux refuses that protection (a container without
# namespaces, say) the grader says so in every report, and the case is skipped here with that reason.
NEEDS = {"reads the instructor's solution": "private root file system",
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
                    sandbox={"memory_bytes": 3 << 30, "processes": 200})
    fill = dict(instructor=str(instructor_path), out=str(out), site=str(SITE), planted=PLANTED,
                course_utils=str(ROOT / "course_utils"), grader_pid=os.getpid())
    reports = {"victim": grade(write(submission(solved=True), subs / "victim_98_guarded.ipynb"), instructor, out, limits=limits)}
    victim_bytes = {p.name: p.read_bytes() for p in out.iterdir()}
    on = " ".join(reports["victim"]["protections"]["on"])
    attacks = base / "attacks"                         # graded as a class folder, two at a time
    attacks.mkdir()
    for i, (name, attack) in enumerate(ATTACKS.items()):
        if NEEDS.get(name) and NEEDS[name] not in on:
            continue                                   # never run an attack this machine's sandbox cannot stop
        for key, value in fill.items():
            attack = attack.replace(f"@{key}@", repr(value))
        write(submission(attack), attacks / f"attack{i:02d}_98_guarded.ipynb")
    graded = grade_all(attacks, instructor, out, jobs=2, limits=limits)
    reports.update({name: r for name, r in zip([n for n in ATTACKS if not NEEDS.get(n) or NEEDS[n] in on], graded)})
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
    flood = reports["floods the machine with processes"]
    assert any("BlockingIOError" in e["message"] or "Resource temporarily unavailable" in e["message"]
               for e in flood["errors"]), flood["errors"]


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
