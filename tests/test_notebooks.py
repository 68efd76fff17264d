"""Every notebook in notebooks/: clean in git, runs green under nbval at its default sizes with every check passing,
every exercise's checks fail with the stub and with each plausible wrong answer (in that same run), and its student
edition holds no solution and scores zero when graded."""
import json
import re

import nbformat
import pytest

from tools import colab

from tools.exercises import (CHECK_TAG, EXERCISE_TAG, find_exercises, hidden_check_cells, solution_only_lines,
                             student_edition)
from tools.grade import grade
from tools.nbval_run import run_nbval
from tools.notebooks import (NOTEBOOK_DIR, NOTEBOOK_NAME, ROOT, budget_seconds, cell_tags, find_notebooks, quick_parameters,
                             read)
from tools.readme import repository_url, rendered
from tools.teeth import read_rows, variants_of, with_teeth

NOTEBOOKS = find_notebooks(NOTEBOOK_DIR)
each_notebook = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
CELL_TIMEOUT = 600


@each_notebook
def test_committed_notebook_is_clean_and_follows_the_layout(path):
    assert NOTEBOOK_NAME.match(path.name), f"{path.name}: name notebooks NN_topic.ipynb"
    nb = read(path)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: the title"
    setup = code[0].source
    assert f"git+{repository_url()}@v" in setup and setup.startswith(colab.HEADER), "first code cell: the setup cell"
    assert colab.current_block(setup) == colab.setup_block(nb), "the setup block is stale: python -m tools.colab --write"
    assert "print(cu.environment_report())" in setup
    assert sum("parameters" in cell_tags(c) for c in code) == 1, "exactly one cell tagged `parameters`"
    assert budget_seconds(nb) > 0                       # raises, naming the key, when the budget is missing
    exercises = find_exercises(nb)
    assert len(exercises) >= 2, "at least two exercises per notebook"
    assert all(ex.wrong for ex in exercises), "give every exercise at least one plausible wrong answer (raw cell wrong-exNN.M)"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in ("## Summary", "## References"):
        assert re.search(f"^{heading}$", markdown, re.M), f"missing section {heading!r}"


@each_notebook
def test_student_edition_contains_no_solution_line(path):
    nb = read(path)
    secret = solution_only_lines(nb)
    assert secret, "an exercise without solution lines"
    student = student_edition(nb, path.name)
    text = json.dumps(student)
    leaked = [line for line in secret if any(line == l.strip() for c in student.cells for l in c.source.splitlines())]
    assert not leaked, f"solution lines in the student edition: {leaked}"
    assert "BEGIN SOLUTION" not in text and "wrong-ex" not in text


def test_readme_lists_every_notebook_with_its_colab_badge():
    # Students open the student edition: every Colab badge opens student/, and each row links the instructor edition
    # after it (as text, not as a badge).
    readme = (ROOT / "README.md").read_text()
    assert rendered(readme) == readme, "README's notebook table is stale: run `make readme`"
    badges = re.findall(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]*)\)", readme)
    assert badges and all("/blob/main/student/" in url for url in badges), [u for u in badges if "/student/" not in u]
    for path in NOTEBOOKS:
        row = next(line for line in readme.splitlines() if f"(student/{path.name})" in line)
        assert row.index(f"student/{path.name}") < row.index(f"notebooks/{path.name}"), row


def test_the_committed_student_edition_is_what_make_student_writes(tmp_path):
    # student/ is what students open (the badges point there): written again from notebooks/, it must not change.
    from tools.student import main as write_student

    assert write_student([str(NOTEBOOK_DIR), "--out", str(tmp_path)]) == 0
    committed = sorted(p.name for p in (ROOT / "student").glob("*.ipynb"))
    assert committed == sorted(p.name for p in tmp_path.glob("*.ipynb")) == sorted(p.name for p in NOTEBOOKS), committed
    stale = [name for name in committed if (ROOT / "student" / name).read_bytes() != (tmp_path / name).read_bytes()]
    assert not stale, f"student/ is out of step with notebooks/ ({', '.join(stale)}): run `make student` and commit student/"


@pytest.mark.notebooks
@each_notebook
def test_notebook_runs_green_under_nbval_and_every_check_has_teeth(path, tmp_path):
    # One top-to-bottom run at the default sizes (the product's promise) holds the notebook's claims and, in probe
    # cells inserted after each exercise, runs its stub and wrong answers against its checks (tools.teeth).
    nb = read(path)
    teeth_rows, cell_rows = tmp_path / "teeth.jsonl", tmp_path / "cells.jsonl"
    probed = with_teeth(nb, teeth_rows)
    for index, cell in enumerate(probed.cells):
        cell.metadata["workbook_index"] = index
    nbformat.write(probed, str(tmp_path / path.name))
    run, tail = run_nbval(tmp_path / path.name, tmp_path, cell_rows, CELL_TIMEOUT, total_timeout=1800)
    rows = [json.loads(line) for line in cell_rows.read_text().splitlines()] if cell_rows.exists() else []
    assert run == "finished", f"{run}\n{tail}"
    failed = [(r["cell"], r["tags"], r["message"][-800:]) for r in rows if r["outcome"] != "passed"]
    assert not failed, failed
    code_cells = [i for i, c in enumerate(probed.cells) if c.cell_type == "code"]
    assert sorted(r["cell"] for r in rows) == code_cells, "some cells never ran"
    results = read_rows(nb, teeth_rows)
    assert len(results) == len(find_exercises(nb)) >= 2
    problems = [p for r in results for p in r.problems()]
    assert not problems, problems


@each_notebook
def test_student_edition_is_what_the_probe_and_the_grader_rely_on(path):
    # Grading matches check cells by tag and resets their source to the instructor's; the teeth probe proves, in the
    # instructor's kernel, that every check fails with the stub. The student edition must be exactly that: the
    # instructor's check cells, and exercise cells equal to the probe's stub variant. Then grading the untouched
    # student edition gives zero without running every notebook a second time (one is graded for real below).
    nb = read(path)
    student = student_edition(nb, path.name)
    hidden = set(hidden_check_cells(nb))                 # left out for the student; the grader puts them back
    ours = [(cell_tags(c), c.source) for i, c in enumerate(nb.cells)
            if any(CHECK_TAG.match(t) for t in cell_tags(c)) and i not in hidden]
    theirs = [(cell_tags(c), c.source) for c in student.cells if any(CHECK_TAG.match(t) for t in cell_tags(c))]
    assert theirs == ours, "the student edition's check cells differ from the instructor's"
    stubs = {c.metadata["tags"][0]: c.source for c in student.cells if any(EXERCISE_TAG.match(t) for t in cell_tags(c))}
    for ex in find_exercises(nb):
        assert stubs[f"exercise-{ex.id}"] == dict(variants_of(nb, ex))["stub"], f"{ex.id}: student stub != probed stub"


def test_untouched_student_edition_scores_zero_when_graded(tmp_path):
    # End to end on a real notebook (the cheapest to grade, 07 at its quick sizes, judged apart: its checks count
    # allocations and take views back): the grader finds every check and none passes. Not marked `notebooks`: no
    # timing of the notebook's is shown here, so it runs beside the other unit tests.
    path = NOTEBOOK_DIR / "07_hardware_efficiency.ipynb"
    submission = tmp_path / path.name
    nbformat.write(student_edition(read(path), path.name), str(submission))
    report = grade(submission, NOTEBOOK_DIR, tmp_path / "grades", cell_timeout=CELL_TIMEOUT, total_timeout=1800,
                   parameters=quick_parameters(read(path)))
    assert report["total"] == sum(len(ex.checks) for ex in find_exercises(read(path))) > 0
    assert report["score"] == 0, [c["id"] for c in report["checks"] if c["passed"]]
    assert all("is not solved yet" in c["message"] if not c["hidden"] else
               c["message"] == "a hidden check failed (NotImplementedError)" for c in report["checks"]), report["checks"]


def test_nbval_runs_record_every_cell_and_talk_to_their_kernel_over_unix_sockets(tmp_path):
    # A kernel on TCP ports found free by binding port 0 could lose them to another process before binding them
    # (this test runs beside others): nbval's kernel here listens on Unix sockets (tools.nbval_report).
    from tests.nbfactory import code, notebook

    nb = notebook(code("from ipykernel.kernelapp import IPKernelApp\napp = IPKernelApp.instance()\n"
                       "assert app.transport == 'ipc', f'the kernel listens on {app.transport}'\nprint(app.ip)"),
                  code("assert 1 + 1 == 3, 'a cell that fails is recorded as failed'"))
    for index, cell in enumerate(nb.cells):
        cell.metadata["workbook_index"] = index
    nbformat.write(nb, str(tmp_path / "transport.ipynb"))
    run, tail = run_nbval(tmp_path / "transport.ipynb", tmp_path, tmp_path / "cells.jsonl", 60, total_timeout=120)
    rows = [json.loads(line) for line in (tmp_path / "cells.jsonl").read_text().splitlines()]
    first, second = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert run == "finished" and [(r["cell"], r["outcome"]) for r in rows] == [(first, "passed"), (second, "failed")], (rows, tail)
    assert "a cell that fails is recorded as failed" in rows[1]["message"], rows[1]
