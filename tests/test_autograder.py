"""The Gradescope bundle: built from an instructor notebook, unpacked into an /autograder-shaped folder, and run
there on a solved and an untouched (stub) submission, as Gradescope runs it."""
import json
import os
import stat
import subprocess
import sys
import zipfile

import pytest

from tests.nbfactory import code, toy_notebook, write
from tools.autograder import build
from tools.exercises import student_edition


def with_hidden_check():
    nb = toy_notebook()
    nb.cells.insert(6, code("assert double(10**6) == 2 * 10**6", "check-ex99.1.large", "hidden"))
    return nb


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    base = tmp_path_factory.mktemp("gradescope")
    instructor = base / "instructor"
    instructor.mkdir()
    write(with_hidden_check(), instructor / "99_toy.ipynb")
    write(toy_notebook(), instructor / "98_secret.ipynb")       # another chapter: must not travel in this zip
    return build("99_toy.ipynb", instructor, base / "autograder.zip", cell_timeout=60, total_timeout=120)


def test_the_zip_has_gradescopes_layout(bundle):
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        config = json.loads(zf.read("autograder.json"))
        setup = zf.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "autograder.json", "requirements.txt", "notebooks/99_toy.ipynb",
            "course_utils/checks.py", "tools/grade.py", "tools/sandbox.py"} <= names
    assert not any(n.startswith("notebooks/") and n != "notebooks/99_toy.ipynb" for n in names), sorted(names)
    assert not any("__pycache__" in n for n in names)
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111, "Gradescope runs both as programs"
    assert config["notebook"] == "99_toy.ipynb"
    assert "download.pytorch.org/whl/cpu" in setup and "-r requirements.txt" in setup


def unpack(bundle, root):
    """What Gradescope does with the zip: /autograder/source, with the files' modes."""
    source = root / "source"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(source)
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if mode:
                os.chmod(source / info.filename, stat.S_IMODE(mode))
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return source


@pytest.mark.parametrize("kind", ["solved", "stub", "nothing", "two, not UTF-8"])
def test_run_autograder_grades_a_submission_into_results_json(bundle, tmp_path, kind):
    root = tmp_path / "autograder"
    source = unpack(bundle, root)
    if kind == "solved":
        write(with_hidden_check(), root / "submission" / "99_toy.ipynb")
    elif kind == "stub":
        write(student_edition(with_hidden_check(), "99_toy.ipynb"), root / "submission" / "my_work.ipynb")
    elif kind == "two, not UTF-8":              # the first in order is graded
        write(with_hidden_check(), root / "submission" / os.fsdecode(b"\xfe_a.ipynb"))
        write(student_edition(with_hidden_check(), "99_toy.ipynb"), root / "submission" / os.fsdecode(b"\xff_b.ipynb"))
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), AUTOGRADER_PYTHON=sys.executable)
    done = subprocess.run([str(source / "run_autograder")], env=env, capture_output=True, text=True, timeout=300,
                          errors="backslashreplace")
    assert done.returncode == 0, done.stdout + done.stderr
    text = (root / "results" / "results.json").read_bytes().decode("utf-8")
    results = json.loads(text)
    assert "\\udc" not in text, "a lone surrogate (a file name's raw byte) in results.json: Gradescope's parser may refuse it"
    scores = {t["name"]: (t["score"], t["max_score"], t["visibility"]) for t in results["tests"]}
    if kind == "solved":
        # no top-level score: Gradescope totals the tests, and a total or a count in the text would reveal the hidden
        # check's result before publication
        assert "score" not in results and "2 of 2 visible checks passed; 1 hidden check" in results["output"], results
        assert scores == {"ex99.1": (1.0, 1.0, "visible"), "ex99.1.b": (1.0, 1.0, "visible"),
                                                      "ex99.1.large (hidden)": (1.0, 1.0, "after_published")}
    elif kind == "stub":
        assert "score" not in results and set(scores) == {"ex99.1", "ex99.1.b", "ex99.1.large (hidden)"}
        assert sum(t["score"] for t in results["tests"]) == 0.0
        visible = [t for t in results["tests"] if t["visibility"] == "visible"]
        assert len(visible) == 2 and all("not solved yet" in t["output"] for t in visible), results["tests"]
        hidden = [t for t in results["tests"] if t["visibility"] == "after_published"]
        assert [t["output"] for t in hidden] == ["a hidden check failed (NotImplementedError)"]
    elif kind == "two, not UTF-8":
        # the name as text (its bytes as \xNN), and a note that is not the run's outcome (red team round 2, session 42:
        # a lone surrogate in results.json, and "did not finish normally" for a run that did)
        assert "did not finish normally" not in results["output"], results["output"]
        assert "Graded \\xfe_a.ipynb~" in results["output"] and "of the 2 notebooks" in results["output"], results["output"]
        assert sum(t["score"] for t in results["tests"]) == 3.0, results["tests"]
    else:
        assert results["score"] == 0.0 and results["tests"] == [] and "no notebook" in results["output"]


def test_the_classroom_workflow_grades_on_push_without_secrets_against_the_student_edition():
    import yaml

    from tools.notebooks import ROOT

    text = (ROOT / "tools" / "classroom" / "autograde.yml").read_text()
    flow = yaml.safe_load(text)
    assert set(flow[True]) >= {"push"}                       # YAML reads the key `on` as True
    assert "secrets." not in text and "token:" not in text, "a student's repository can keep no secret"
    steps = flow["jobs"]["grade"]["steps"]
    commands = "\n".join(s.get("run", "") for s in steps)
    assert "INSTRUCTOR=student" in commands and "build/student" not in commands   # the committed student edition
    # the make targets and variables it uses exist (a dry run plans the commands without running them)
    done = subprocess.run(["make", "-n", "-C", str(ROOT), "grade", "NB=/nowhere", "J=1", "INSTRUCTOR=student"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "tools.grade /nowhere --instructor student" in done.stdout \
        and "-j 1" in done.stdout, done.stdout + done.stderr


def test_grading_against_the_student_edition_runs_the_visible_checks(tmp_path):
    # What the classroom workflow does: the student edition as the notebook to grade against (its exercise cells
    # are stubs, its checks the visible ones). A solved submission passes them; no hidden check is run.
    from tests.nbfactory import code
    from tools.grade import grade

    nb = toy_notebook()
    nb.cells.insert(6, code("assert double(10**6) == 2 * 10**6", "check-ex99.1.large", "hidden"))
    published = tmp_path / "student"
    published.mkdir()
    write(student_edition(nb, "99_toy.ipynb"), published / "99_toy.ipynb")
    solved = write(nb, tmp_path / "mine_99_toy.ipynb")
    report = grade(solved, published, tmp_path / "g")
    assert (report["score"], report["total"], report["hidden"]["total"]) == (2, 2, 0), report["checks"]
