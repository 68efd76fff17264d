"""The grader on small notebooks: full marks, zero marks, edited, deleted and invented checks, missing exercises,
crashes and hangs (the attacks are in test_hostile_submissions.py)."""
import json
import os
from pathlib import Path

import nbformat
import pytest

from tests.nbfactory import code, toy_notebook, write
from tools.exercises import student_edition
from tools.grade import grade


@pytest.fixture
def instructor_dir(tmp_path):
    folder = tmp_path / "instructor"
    folder.mkdir()
    write(toy_notebook(), folder / "99_toy.ipynb")
    return folder


def run(submission_nb, tmp_path, instructor_dir, name="alice_99_toy.ipynb", **kw):
    path = write(submission_nb, tmp_path / name)
    return grade(path, instructor_dir, tmp_path / "grades", **kw)


def by_id(report):
    return {c["id"]: c for c in report["checks"]}


def test_instructor_notebook_gets_full_marks(tmp_path, instructor_dir):
    report = run(toy_notebook(), tmp_path, instructor_dir)
    assert (report["score"], report["total"]) == (2, 2) and report["errors"] == []
    saved = json.loads((tmp_path / "grades" / "alice_99_toy.json").read_text())
    assert saved["score"] == 2 and saved["notebook"] == "alice_99_toy.ipynb"
    xml = (tmp_path / "grades" / "alice_99_toy.xml").read_text()
    assert 'tests="2" failures="0"' in xml and 'name="ex99.1.b"' in xml


def test_untouched_student_edition_gets_zero(tmp_path, instructor_dir):
    report = run(student_edition(toy_notebook(), "99_toy.ipynb"), tmp_path, instructor_dir, name="bob.ipynb")
    assert report["instructor"] == "99_toy.ipynb"  # matched through metadata, not the file name
    assert (report["score"], report["total"]) == (0, 2)
    assert "Exercise ex99.1 is not solved yet" in by_id(report)["ex99.1"]["message"]
    assert 'failures="2"' in (tmp_path / "grades" / "bob.xml").read_text()


def test_weakened_check_does_not_count(tmp_path, instructor_dir):
    nb = toy_notebook()
    nb.cells[2].source = nb.cells[2].source.replace("x * FACTOR", "x + 1")  # wrong: double(3) == 4
    nb.cells[4].source = "assert True  # student edited the check"
    nb.cells[4].metadata["tags"].append("raises-exception")
    nb.cells[5].metadata["tags"] = ["check-ex99.1.b", "nbval-skip"]
    report = run(nb, tmp_path, instructor_dir)
    assert by_id(report)["ex99.1"]["passed"] is False and "double(3) should be 6, got 4" in by_id(report)["ex99.1"]["message"]
    assert by_id(report)["ex99.1.b"]["passed"] is False


def test_invented_check_tag_counts_for_nothing(tmp_path, instructor_dir):
    nb = toy_notebook()
    nb.cells.append(code("assert True", "check-ex99.7"))
    report = run(nb, tmp_path, instructor_dir)
    assert [c["id"] for c in report["checks"]] == ["ex99.1", "ex99.1.b"] and report["score"] == 2


def test_deleted_or_retagged_check_cells_still_run(tmp_path, instructor_dir):
    # The checks that run are the instructor's, whatever the submission did to its copies: a right answer keeps
    # full marks, a wrong one gets nothing for a check it deleted or retagged.
    nb = toy_notebook()
    del nb.cells[5]
    nb.cells[4].metadata["tags"] = ["check-ex99.7"]
    assert run(nb, tmp_path, instructor_dir)["score"] == 2
    nb.cells[2].source = nb.cells[2].source.replace("x * FACTOR", "x + FACTOR")
    report = run(nb, tmp_path, instructor_dir, name="bob_99_toy.ipynb")
    assert report["score"] == 0 and "double(3) should be 6, got 5" in by_id(report)["ex99.1"]["message"]


def test_cells_outside_the_exercises_are_not_run(tmp_path, instructor_dir):
    # A submission's own cells (here one that would make every later check pass by replacing double) are not
    # part of the graded run: only its exercise cells are.
    nb = toy_notebook()
    nb.cells[2].source = nb.cells[2].source.replace("x * FACTOR", "x + FACTOR")
    nb.cells.insert(3, code("def double(x):\n    return 2 * x"))
    report = run(nb, tmp_path, instructor_dir)
    assert report["score"] == 0, report["checks"]


def test_a_missing_exercise_cell_runs_its_stub_and_says_so(tmp_path, instructor_dir):
    nb = toy_notebook()
    nb.cells[2].metadata["tags"] = []
    report = run(nb, tmp_path, instructor_dir)
    assert report["score"] == 0 and report["missing_exercises"] == ["ex99.1"]
    assert "has no cell tagged exercise-ex99.1" in by_id(report)["ex99.1"]["message"]


def test_kernel_crash_still_gets_a_report(tmp_path, instructor_dir):
    nb = toy_notebook()
    nb.cells[2].source += "\nimport os\nos._exit(1)"
    report = run(nb, tmp_path, instructor_dir)
    assert (report["score"], report["total"]) == (0, 2) and "the kernel died" in report["run"], report["run"]
    assert all("never ran" in c["message"] for c in report["checks"]), report["checks"]


def test_infinite_loop_hits_the_cell_timeout(tmp_path, instructor_dir):
    # Every cell that calls the looping function (the student's own call and both checks) is interrupted after the
    # cell timeout; a short one keeps the test fast, and nothing here depends on how fast the other cells run.
    nb = toy_notebook()
    nb.cells[2].source = nb.cells[2].source.replace("### BEGIN SOLUTION", "### BEGIN SOLUTION\n    while True: pass")
    report = run(nb, tmp_path, instructor_dir, cell_timeout=1)
    assert report["score"] == 0 and report["seconds"] < 60
    assert all("Timeout of 1 seconds exceeded" in c["message"] and "KeyboardInterrupt" in c["message"]
               for c in report["checks"]), report["checks"]
    assert "Timeout of 1 seconds exceeded" in report["errors"][-1]["message"], report["errors"]   # the last cell


def test_overall_limit_kills_the_run_and_keeps_the_report(tmp_path, instructor_dir, monkeypatch, request):
    import tempfile

    import psutil

    # The exercise cell waits forever: only the overall limit can end the run, and it ends before any check has
    # run. The kernel's folder is under a scratch folder of this test's own (short, for the kernel's socket paths),
    # so its processes (the sandbox's and the kernel's command lines name it) can be looked for afterwards without
    # knowing when each started.
    import shutil

    scratch = Path(tempfile.mkdtemp(prefix="overall-limit-"))        # short: the kernel's socket paths live in it
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    nb = toy_notebook()
    nb.cells[2].source += "\nimport threading\nthreading.Event().wait()"
    report = run(nb, tmp_path, instructor_dir, cell_timeout=600, total_timeout=6)
    assert report["run"].startswith("the overall limit of 6 s ran out"), report["run"]
    assert report["score"] == 0 and "never ran" in by_id(report)["ex99.1"]["message"]

    def of_the_run(proc):
        try:
            return any(str(scratch) in part for part in proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    assert not [p for p in psutil.process_iter() if of_the_run(p)], "the killed run left processes behind"
    assert not list(scratch.iterdir()), "the killed run left files behind"


def test_a_temporary_folder_too_deep_for_the_kernels_sockets_is_named_not_a_silent_zero(tmp_path, instructor_dir,
                                                                                         monkeypatch):
    # The kernel talks over Unix sockets in its folder, whose paths may not exceed 107 bytes: under a deep TMPDIR
    # the grade says so (and what to change) instead of failing inside ZMQ; nothing is left behind.
    import tempfile

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    report = run(toy_notebook(), tmp_path, instructor_dir)
    assert report["run"].startswith("the kernel did not start: the kernel's socket paths"), report["run"]
    assert "over the 107 a Unix socket allows: point TMPDIR at a shorter folder" in report["run"], report["run"]
    assert report["score"] == 0 and not list(deep.iterdir()), "a kernel folder was left behind"


def test_unreadable_submission_and_unknown_notebook(tmp_path, instructor_dir):
    broken = tmp_path / "carol_99_toy.ipynb"
    broken.write_text("{ not json")
    report = grade(broken, instructor_dir, tmp_path / "grades")
    assert (report["score"], report["total"]) == (0, 2) and "not a readable notebook" in report["checks"][0]["message"]
    stray = write(toy_notebook(), tmp_path / "unrelated.ipynb")
    report = grade(stray, instructor_dir, tmp_path / "grades")
    assert report["total"] == 0 and "no instructor notebook" in report["run"]
    assert (tmp_path / "grades" / "unrelated.json").exists()


def test_a_class_folder_grades_in_parallel_into_a_gradebook_and_feedback(tmp_path, instructor_dir, capsys):
    import csv

    from tools.grade import main

    subs, out = tmp_path / "subs", tmp_path / "g"
    subs.mkdir()
    solved = toy_notebook()
    solved.metadata["workbook"] = {"group": ["Ada Lovelace (s1)", "Alan Turing (s2)"]}
    write(solved, subs / "a_99_toy.ipynb")
    crash = toy_notebook()
    crash.cells[2].source += "\nimport os; os._exit(3)"
    crash.cells.insert(1, nbformat.v4.new_markdown_cell("**Group members**\n- (name), (student id)\n- Grace Hopper (s3)"))
    crash.cells[1].metadata["tags"] = ["group"]
    write(crash, subs / "b_99_toy.ipynb")
    write(student_edition(toy_notebook(), "99_toy.ipynb"), subs / "c_stub.ipynb")
    (subs / "d_report.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    other = toy_notebook()
    other.metadata["workbook"] = {"notebook": "98_other.ipynb"}
    write(other, subs / "e_98_other.ipynb")
    write(toy_notebook(), instructor_dir / "98_other.ipynb")
    args = [str(subs), "--instructor", str(instructor_dir), "--out", str(out), "--cell-timeout", "30", "-j", "2",
            "--notebook", "99_toy.ipynb"]
    assert main(args) == 0
    assert "a_99_toy.ipynb" in capsys.readouterr().out
    rows = {r["submission"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert list(rows) == ["a_99_toy.ipynb", "b_99_toy.ipynb", "c_stub.ipynb", "d_report.pdf", "e_98_other.ipynb"]
    assert [(rows[k]["ex99.1"], rows[k]["total"], rows[k]["max"]) for k in rows] == \
        [("2", "2", "2"), ("0", "0", "2"), ("0", "0", "2"), ("", "0", "0"), ("", "0", "0")]
    assert rows["a_99_toy.ipynb"]["members"] == "Ada Lovelace (s1); Alan Turing (s2)"
    assert rows["b_99_toy.ipynb"]["members"] == "Grace Hopper (s3)"
    assert rows["b_99_toy.ipynb"]["status"].startswith("the kernel died")
    assert rows["d_report.pdf"]["status"].startswith("not a notebook")
    assert "not for 99_toy.ipynb" in rows["e_98_other.ipynb"]["status"]
    assert all(rows[k]["written"] == "" for k in rows)
    feedback = (out / "c_stub.md").read_text()
    assert "| ex99.1 | failed |" in feedback and "Exercise ex99.1 is not solved yet" in feedback
    assert "Checks passed: **2 of 2**" in (out / "a_99_toy.md").read_text()
    assert (out / "d_report.pdf.not-a-notebook.json").is_file()

    # Run again: nothing changed, so nothing is graded again; change one submission and only it is.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    changed = toy_notebook()
    changed.cells[2].source = changed.cells[2].source.replace("x * FACTOR", "x + FACTOR")
    write(changed, subs / "a_99_toy.ipynb")
    assert main(args) == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert [name for name in before if after[name] != before[name]] == ["a_99_toy.json"]
    rows = {r["submission"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert rows["a_99_toy.ipynb"]["total"] == "0" and rows["c_stub.ipynb"]["total"] == "0"


def toy_with_hidden_check():
    # A hidden check the student never sees: it catches the "right only for small inputs" answer below.
    nb = toy_notebook()
    nb.cells.insert(6, code("result = double(10**6)\nassert result == 2 * 10**6, f'double(10**6) should be 2000000, got {result}'",
                            "check-ex99.1.large", "hidden"))
    return nb


def test_hidden_checks_are_put_back_counted_and_kept_secret(tmp_path):
    instructor = tmp_path / "instructor_hidden"
    instructor.mkdir()
    write(toy_with_hidden_check(), instructor / "99_toy.ipynb")
    student = student_edition(toy_with_hidden_check(), "99_toy.ipynb")
    assert "10**6" not in json.dumps(student), "the student edition shows the hidden check"
    # right on the visible checks (3 and -1.5), wrong beyond 1000; the student also plants a cell under the hidden
    # check's tag before the exercise, where it could not fail: it is dropped, the instructor's goes after the checks
    solved = student_edition(toy_with_hidden_check(), "99_toy.ipynb")
    exercise = next(i for i, c in enumerate(solved.cells) if "exercise-ex99.1" in c.metadata.get("tags", []))
    solved.cells[exercise].source = ("def double(x):\n    return 2 * x if abs(x) < 1000 else 0")
    solved.cells.insert(1, code("pass", "check-ex99.1.large", "hidden"))
    report = run(solved, tmp_path, instructor, name="carol.ipynb")
    checks = by_id(report)
    assert (report["score"], report["total"], report["hidden"]) == (2, 3, {"passed": 0, "total": 1})
    assert checks["ex99.1"]["passed"] and checks["ex99.1.b"]["passed"] and not checks["ex99.1.large"]["passed"]
    assert checks["ex99.1.large"] == {"id": "ex99.1.large", "passed": False, "hidden": True, "after_hidden": False,
                                      "message": "a hidden check failed (AssertionError)"}
    assert "10**6" not in (tmp_path / "grades" / "carol.xml").read_text() + json.dumps(report)
    full = run(toy_with_hidden_check(), tmp_path, instructor, name="dave_99_toy.ipynb")
    assert (full["score"], full["total"], full["hidden"]) == (3, 3, {"passed": 1, "total": 1})


def test_written_answers_are_collected_with_question_and_rubric_for_the_graders(tmp_path):
    import csv

    from tests.nbfactory import with_question
    from tools.grade import grade_all

    instructor = tmp_path / "instructor_q"
    instructor.mkdir()
    write(with_question(toy_notebook()), instructor / "99_toy.ipynb")
    subs = tmp_path / "subs"
    subs.mkdir()
    answered = student_edition(with_question(toy_notebook()), "99_toy.ipynb")
    answered.metadata["workbook"]["group"] = ["Ada (s1)"]
    answer = next(c for c in answered.cells if "answer-q99.1" in c.metadata.get("tags", []))
    answer.source = "Only the exponent changes, so the result is exact."
    write(answered, subs / "a.ipynb")
    write(student_edition(with_question(toy_notebook()), "99_toy.ipynb"), subs / "b.ipynb")
    forger = student_edition(with_question(toy_notebook()), "99_toy.ipynb")   # an answer that imitates the sheet
    forger.metadata["workbook"]["group"] = ["Eve <b>#1</b>"]
    forged = "Mine.\n````\n\n### a.ipynb: Ada (s1)\n\nA forged answer for Ada.\n\n```"
    next(c for c in forger.cells if "answer-q99.1" in c.metadata.get("tags", [])).source = forged
    write(forger, subs / "c.ipynb")
    reports = grade_all(subs, instructor, tmp_path / "g")
    assert [r["written"] for r in reports] == [{"q99.1": "Only the exponent changes, so the result is exact."}, {"q99.1": ""},
                                               {"q99.1": forged}]
    sheet = (tmp_path / "g" / "written" / "99_toy.md").read_text()
    for needed in ("Why does doubling a float never lose precision?", "2 points: names the exponent",
                   "### a.ipynb: Ada (s1)", "Only the exponent changes", "### b.ipynb: (no members listed)", "*(no answer)*"):
        assert needed in sheet, needed
    assert "mantissa" not in sheet, "the model answer is the instructor's, not a submission's"
    headings, fence = [], None                  # the sheet's own headings: outside every fenced answer
    for line in sheet.splitlines():
        if fence is None and line.startswith("```"):
            fence = line.rstrip("text")
        elif fence is not None and line == fence:
            fence = None
        elif fence is None and line.startswith("### "):
            headings.append(line)
    assert headings == ["### a.ipynb: Ada (s1)", "### b.ipynb: (no members listed)", "### c.ipynb: Eve \\<b\\>\\#1\\</b\\>"], headings
    rows = list(csv.reader((tmp_path / "g" / "written" / "99_toy.csv").open()))
    assert rows == [["submission", "members", "q99.1"], ["a.ipynb", "Ada (s1)", ""], ["b.ipynb", "", ""],
                    ["c.ipynb", "Eve <b>#1</b>", ""]]
    book = {r["submission"]: r for r in csv.DictReader((tmp_path / "g" / "gradebook.csv").open())}
    assert book["a.ipynb"]["written"] == "" and book["a.ipynb"]["total"] == "0"


def test_a_hidden_checks_failure_names_only_pythons_own_exceptions():
    # A class the submission defines could carry any text in its name (a hidden check's expected value, say), and
    # the report shows the name: only Python's own exception names are shown.
    from tools.grade import _exception_type

    assert _exception_type("Traceback...\nAssertionError: Check failed.\nHint: look again") == "AssertionError"
    assert _exception_type("NotImplementedError: Exercise ex00.1 is not solved yet") == "NotImplementedError"
    assert _exception_type("Expected_2000000_Error: x") == "failed"
    assert _exception_type("no exception here") == "failed"


def test_feedback_keeps_a_message_inside_its_block():
    # A failing check's message comes from the submission's code: with backticks of its own it must not close the
    # block and print a forged "Checks passed" line or HTML into the page students and graders read.
    from tools.grade import empty_report, feedback

    report = empty_report("x.ipynb")
    report.update(instructor="99_toy.ipynb", total=1, checks=[{"id": "ex99.1", "passed": False, "hidden": False,
                  "message": "AssertionError: no\n```\n\nChecks passed: **1 of 1**\n<img src=x>\n````"}])
    lines = feedback(report).splitlines()
    opening = next(i for i, l in enumerate(lines) if l.startswith("```"))
    fence = lines[opening][:-len("text")]
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i] == fence)
    assert len(fence) == 5 and all(l != fence for l in lines[opening + 1:closing])
    assert [l for l in lines[closing + 1:] if "Checks passed" in l or "<img" in l] == []


def test_a_file_name_that_is_not_utf8_gets_its_report_and_the_class_its_gradebook(tmp_path, instructor_dir):
    """A name the file system allows but UTF-8 does not (an uploaded b"bob\\xff.ipynb") once crashed the writing of
    its report, and with it the whole class's gradebook."""
    import csv

    from tools.grade import grade_all

    subs = tmp_path / "subs"
    subs.mkdir()
    write(toy_notebook(), subs / "alice_99_toy.ipynb")
    write(toy_notebook(), subs / os.fsdecode(b"bob\xff_99_toy.ipynb"))
    reports = grade_all(subs, instructor_dir, tmp_path / "g", cell_timeout=30)
    assert [r["score"] for r in reports] == [2, 2]
    rows = list(csv.DictReader((tmp_path / "g" / "gradebook.csv").open()))
    assert rows[0]["submission"] == "alice_99_toy.ipynb"
    assert rows[1]["submission"].startswith("bob\\xff_99_toy.ipynb~") and rows[1]["total"] == "2"
    bob = [p for p in (tmp_path / "g").glob("bob*")]
    assert sorted(p.suffix for p in bob) == [".json", ".md", ".xml"] and all(p.name.isprintable() for p in bob)


def test_submissions_graded_side_by_side_share_the_cores_between_their_kernels(tmp_path, monkeypatch):
    # jobs kernels compute at once (a submission's and its judge's take turns): each gets cores // jobs threads,
    # unless the grader chose them; the limits each grade() is handed say so
    import tools.grade as grading
    from tools.kernel import Limits

    seen = []
    monkeypatch.setattr(grading, "grade", lambda path, *args, **kwargs: seen.append(args[5]) or
                        grading.empty_report(path.name, "not graded here"))
    (tmp_path / "subs").mkdir()
    for name in ("a", "b"):
        write(toy_notebook(), tmp_path / "subs" / f"{name}_01_toy.ipynb")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    limits = Limits(cell_seconds=30, sandbox={"processes": 64})
    grading.grade_all(tmp_path / "subs", tmp_path, tmp_path / "out", jobs=2, limits=limits, resume=False)
    assert [l.sandbox for l in seen] == [{"processes": 64, "threads": 4}] * 2 and seen[0].cell_seconds == 30, seen
    assert limits.sandbox == {"processes": 64}, "the caller's limits were changed"
    seen.clear()
    grading.grade_all(tmp_path / "subs", tmp_path, tmp_path / "out", jobs=3, limits=None, resume=False,
                      cell_timeout=7, total_timeout=33)
    assert [l.sandbox for l in seen] == [{"threads": 2}] * 2, seen
    assert {(l.cell_seconds, l.total_seconds) for l in seen} == {(7, 33)}, f"the time limits asked for were lost: {seen}"
    seen.clear()
    grading.grade_all(tmp_path / "subs", tmp_path, tmp_path / "out", jobs=1, limits=limits, resume=False)
    assert seen == [limits] * 2, "one at a time: the machine's threads"
    seen.clear()
    grading.grade_all(tmp_path / "subs", tmp_path, tmp_path / "out", jobs=2, limits=Limits(sandbox={"threads": 3}), resume=False)
    assert [l.sandbox for l in seen] == [{"threads": 3}] * 2, seen
    seen.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grading.grade_all(tmp_path / "subs", tmp_path, tmp_path / "out", jobs=2, limits=limits, resume=False)
    assert seen == [limits] * 2, "the grader's OMP_NUM_THREADS is kept (the sandbox passes it on)"


def test_report_keys_are_one_per_file_name_and_fit_a_file_system(tmp_path):
    # red team, session 42: `alice.pdf.not-a-notebook.ipynb` took `alice.pdf`'s report files, and a 250-byte name (or
    # 120 bytes that are not UTF-8, four times longer as \xNN) made a report name the file system refused, which
    # stopped the whole batch before its gradebook
    import csv

    from tools.grade import KEY_BYTES, grade_all, report_key

    long_pdf, not_utf8 = "x" * 246 + ".pdf", os.fsdecode(b"\xff" * 120 + b".ipynb")
    bob = os.fsdecode(b"bob\xff.ipynb")
    spelled = report_key(tmp_path / bob) + ".ipynb"                  # a UTF-8 name spelling bob's key, backslash and all
    names = ["alice.pdf", "alice.pdf.not-a-notebook.ipynb", "alice.ipynb", long_pdf, not_utf8, bob, spelled]
    keys = [report_key(tmp_path / n) for n in names]
    assert len(set(keys)) == len(keys), keys
    assert keys[0] == "alice.pdf.not-a-notebook" and keys[2] == "alice", keys            # the ordinary ones unchanged
    assert all(len(k.encode("utf-8", "surrogatepass")) <= KEY_BYTES for k in keys), [len(k) for k in keys]
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in (long_pdf, "alice.pdf", "alice.pdf.not-a-notebook.ipynb"):
        (subs / name).write_text("not a notebook at all")
    reports = grade_all(subs, tmp_path / "no-instructors", tmp_path / "g")
    rows = list(csv.DictReader((tmp_path / "g" / "gradebook.csv").open()))
    assert len(rows) == 3 and all(r["total"] == "0" for r in rows), rows
    written = sorted(p.name for p in (tmp_path / "g").glob("*.json"))
    assert len(written) == 3, written                                 # none took another's files
    assert {json.loads((tmp_path / "g" / n).read_text())["notebook"] for n in written} == {r["notebook"] for r in reports}


def test_feedback_and_the_grader_s_table_show_a_submission_s_text_as_text():
    # red team, session 42: the run line of the feedback carried raw HTML and Markdown (from the notebook's metadata,
    # its nbformat field or its file name), and the table printed on the grader's terminal carried escapes that erased
    # the real FAIL lines and drew fake PASS lines and a fake score
    from tools.grade import _table_text, empty_report, feedback
    from tools.kernel import _strip_ansi

    report = empty_report("mallory\x1b[2K\r.ipynb", "<img src=x onerror=alert(1)> **all passed** [here](http://x)")
    report.update(instructor="99_toy.ipynb", total=1, seconds=1.0, checks=[
        {"id": "ex99.1", "passed": False, "hidden": False, "message": "no\n\x1b[1A\x1b[2K\r  PASS  ex99.1 \u202e"}])
    from markdown_it import MarkdownIt                                   # CommonMark, as the pages are read

    html = MarkdownIt("commonmark").render(feedback(report))
    run_line = next(l for l in html.splitlines() if "The run did not finish normally" in l)
    assert "<img" not in run_line and "<strong>all passed" not in run_line and "<a " not in run_line, run_line
    assert "&lt;img src=x onerror=alert(1)&gt;" in run_line, run_line            # shown as text
    table = _table_text([report])
    assert not any(ch in table for ch in "\x1b\r\u202e"), repr(table)
    assert "\\u001b[2K\\u000d" in table, repr(table)                  # shown, not obeyed
    assert _strip_ansi("\x1b\x1b[m[2K \x1b[31mred\x1b[0m \x9b2K \r") == "[2K red 2K ", "one pass left an ESC[2K"
