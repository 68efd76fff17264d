"""Every notebook in notebooks/: clean in git, runs green under nbval with full marks, its student edition holds
no solution and scores zero, and every exercise's checks fail with the stub and with each plausible wrong answer."""
import json
import re

import nbformat
import pytest

from tools.exercises import find_exercises, solution_only_lines, student_edition
from tools.grade import grade
from tools.notebooks import NOTEBOOK_DIR, NOTEBOOK_NAME, ROOT, cell_tags, find_notebooks, read, quick_parameters
from tools.readme import repository_url, rendered
from tools.teeth import probe

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
    assert f"git+{repository_url()}" in setup and "find_spec(\"course_utils\")" in setup, "first code cell: the setup cell"
    assert "torch" not in setup.split("check=True")[0].split("pip")[1], "the setup cell must never install torch"
    assert "print(cu.environment_report())" in setup
    assert sum("parameters" in cell_tags(c) for c in code) == 1, "exactly one cell tagged `parameters`"
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
    readme = (ROOT / "README.md").read_text()
    assert rendered(readme) == readme, "README's notebook table is stale: run `make readme`"
    for path in NOTEBOOKS:
        assert f"notebooks/{path.name}" in readme


@pytest.mark.notebooks
@each_notebook
def test_instructor_notebook_runs_green_under_nbval_with_full_marks(path, tmp_path):
    report = grade(path, NOTEBOOK_DIR, tmp_path, cell_timeout=CELL_TIMEOUT, total_timeout=1800)
    assert report["run"] == "finished", report["run"]
    assert report["errors"] == [], f"cells failed: {report['errors']}"
    failed = [c for c in report["checks"] if not c["passed"]]
    assert report["total"] > 0 and not failed, failed


@pytest.mark.notebooks
@each_notebook
def test_untouched_student_edition_scores_zero(path, tmp_path):
    submission = tmp_path / path.name
    nbformat.write(student_edition(read(path), path.name), str(submission))
    report = grade(submission, NOTEBOOK_DIR, tmp_path / "grades", cell_timeout=CELL_TIMEOUT, total_timeout=1800,
                   parameters=quick_parameters(read(path)))
    assert report["total"] == sum(len(ex.checks) for ex in find_exercises(read(path)))
    assert report["score"] == 0, [c["id"] for c in report["checks"] if c["passed"]]


@pytest.mark.notebooks
@each_notebook
def test_every_check_fails_with_the_stub_and_with_each_wrong_answer(path):
    quick = quick_parameters(read(path))
    results, cell_errors = probe(path, cell_timeout=CELL_TIMEOUT, parameters=quick)
    # At full size every cell must pass (the nbval test holds that); at the quick test sizes only the exercises count.
    assert quick or not cell_errors, cell_errors
    assert results and len(results) == len(find_exercises(read(path)))
    problems = [p for r in results for p in r.problems()]
    assert not problems, problems
