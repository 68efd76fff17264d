import json

import nbformat
import pytest

from tests.nbfactory import code, notebook, toy_notebook
from tools.exercises import (ExerciseFormatError, find_exercises, replace_solutions, solution_only_lines,
                             student_edition, wrong_answer_source)


def test_find_exercises_maps_checks_and_wrong_answers():
    nb = toy_notebook()
    (ex,) = find_exercises(nb)
    assert ex.id == "ex99.1" and ex.cell == 2 and ex.wrong == [3]
    assert ex.checks == {"ex99.1": [4], "ex99.1.b": [5]}
    assert ex.last_check == 5


def test_replace_solutions_keeps_indentation():
    source = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\nx = 1"
    assert replace_solutions(source, lambda indent: ["pass"]) == "def f():\n    pass\nx = 1"


def test_wrong_answer_replaces_the_region():
    nb = toy_notebook()
    (ex,) = find_exercises(nb)
    assert "    return x + FACTOR" in wrong_answer_source(nb, ex, 3)
    assert "secret_value" not in wrong_answer_source(nb, ex, 3)


@pytest.mark.parametrize("cells,match", [
    ([code("x = 1\n### BEGIN SOLUTION\n### END SOLUTION")], "outside an exercise"),
    ([code("def f():\n    ### BEGIN SOLUTION\n    return 1", "exercise-ex01.1")], "never closed"),
    ([code("### END SOLUTION", "exercise-ex01.1")], "without"),
    ([code("x = 1", "exercise-ex01.1")], "has no ### BEGIN"),
    ([code("### BEGIN SOLUTION\n### END SOLUTION", "exercise-ex01.1")], "no check cell"),
    ([code("assert True", "check-ex01.1")], "comes before"),
    ([code("### BEGIN SOLUTION\n### END SOLUTION", "exercise-ex01.1"), code("pass", "wrong-ex01.1"), code("assert 1", "check-ex01.1")], "raw cell"),
    ([code("### BEGIN SOLUTION\n### END SOLUTION", "exercise-ex01.1"), code("### BEGIN SOLUTION\n### END SOLUTION", "exercise-ex01.1")], "defined twice"),
])
def test_format_errors_are_named(cells, match):
    with pytest.raises(ExerciseFormatError, match=match):
        find_exercises(notebook(*cells))


def test_student_edition_strips_solutions_outputs_and_metadata(tmp_path):
    nb = toy_notebook()
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="secret_value leaked in output")]
    nb.cells[1].execution_count = 3
    nb.cells[2].metadata["papermill"] = {"duration": 0.1}
    student = student_edition(nb, "99_toy.ipynb")
    text = json.dumps(student)
    assert "BEGIN SOLUTION" not in text and "secret_value" not in text and "x + FACTOR" not in text
    assert "papermill" not in text
    assert student.metadata["workbook"] == {"notebook": "99_toy.ipynb", "edition": "student"}
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in student.cells if c.cell_type == "code")
    assert [c.metadata.get("tags") for c in student.cells if c.metadata.get("tags")] == [["exercise-ex99.1"], ["check-ex99.1"], ["check-ex99.1.b"]]
    assert 'raise NotImplementedError("Exercise ex99.1 is not solved yet' in student.cells[2].source
    assert "    '''Twice x.'''" in student.cells[2].source  # the question stays


def test_solution_only_lines_ignores_lines_shared_with_public_cells():
    nb = toy_notebook()
    assert solution_only_lines(nb) == {"secret_value = x * FACTOR", "return secret_value", "# adds instead of multiplying", "return x + FACTOR"}


def test_student_edition_of_a_cell_that_depends_on_the_exercise_fails_with_its_message(tmp_path):
    from nbclient import NotebookClient

    from tools.notebooks import ipc_kernel_manager

    student = student_edition(toy_notebook(), "99_toy.ipynb")
    client = NotebookClient(student, km=ipc_kernel_manager(tmp_path), kernel_name="python3", timeout=60, allow_errors=True)
    client.execute()
    last = student.cells[-1].outputs[0]
    assert last.output_type == "error" and last.ename == "NotImplementedError" and "ex99.1" in last.evalue
    assert student.cells[1].outputs == []  # ordinary cells before the exercise still run green


def test_with_parameters_injects_after_the_parameters_cell():
    from tools.notebooks import quick_parameters, with_parameters

    nb = toy_notebook()
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.metadata["workbook"] = {"quick_parameters": {"FACTOR": 3}}
    out = with_parameters(nb, quick_parameters(nb))
    assert out.cells[2].metadata["tags"] == ["injected-parameters"] and "FACTOR = 3" in out.cells[2].source
    assert len(nb.cells) + 1 == len(out.cells) and with_parameters(nb, {}).cells == nb.cells
    with pytest.raises(ValueError, match="no cell tagged `parameters`"):
        with_parameters(toy_notebook(), {"X": 1})


@pytest.mark.parametrize("body,match", [
    ("return x + FACTOR", "must start with a '# why it is wrong' comment"),
    ("#\nreturn x + FACTOR", "must start with a '# why it is wrong' comment"),
    ("# reason, then code that does not parse\nreturn x +", "does not compile in place of the solution"),
])
def test_wrong_answer_must_have_a_reason_comment_and_compile(body, match):
    nb = toy_notebook()
    nb.cells[3].source = body
    with pytest.raises(ExerciseFormatError, match=match):
        find_exercises(nb)


def test_hidden_checks_are_found_and_must_be_whole_and_not_alone():
    nb = toy_notebook()
    nb.cells[5].metadata["tags"].append("hidden")                 # check-ex99.1.b
    (ex,) = find_exercises(nb)
    assert ex.hidden == {"ex99.1.b"} and set(ex.checks) == {"ex99.1", "ex99.1.b"}
    assert [c.metadata.get("tags") for c in student_edition(nb, "99_toy.ipynb").cells].count(["check-ex99.1.b", "hidden"]) == 0
    nb.cells[4].metadata["tags"].append("hidden")
    with pytest.raises(ExerciseFormatError, match="every check is hidden"):
        find_exercises(nb)
    nb = toy_notebook()
    nb.cells.insert(6, code("assert double(2) == 4", "check-ex99.1.b", "hidden"))
    with pytest.raises(ExerciseFormatError, match="hidden in some of its cells only"):
        find_exercises(nb)
    nb = toy_notebook()
    nb.cells[1].metadata["tags"] = ["hidden"]
    with pytest.raises(ExerciseFormatError, match="only a check cell can be hidden"):
        find_exercises(nb)


def test_written_questions_are_found_and_their_format_is_enforced():
    from tests.nbfactory import markdown, with_question
    from tools.exercises import find_questions

    nb = with_question(toy_notebook())
    [q] = find_questions(nb)
    assert (q.id, nb.cells[q.question].cell_type, nb.cells[q.rubric].cell_type) == ("q99.1", "markdown", "raw")
    broken = with_question(toy_notebook())
    del broken.cells[-1]
    with pytest.raises(ExerciseFormatError, match="question q99.1 has no rubric cell"):
        find_questions(broken)
    early = toy_notebook()
    early.cells.insert(1, markdown("an answer", "answer-q99.2"))
    with pytest.raises(ExerciseFormatError, match="answer-q99.2 comes before"):
        find_questions(early)
    code_answer = with_question(toy_notebook())
    code_answer.cells[-2].cell_type = "code"
    with pytest.raises(ExerciseFormatError, match="must be a markdown cell"):
        find_questions(code_answer)


def test_student_edition_empties_model_answers_and_drops_rubrics():
    from tests.nbfactory import with_question
    from tools.exercises import ANSWER_PLACEHOLDER

    nb = with_question(toy_notebook())
    student = student_edition(nb, "99_toy.ipynb")
    text = json.dumps(student)
    assert "mantissa" not in text and "2 points" not in text
    answer = [c for c in student.cells if "answer-q99.1" in c.metadata.get("tags", [])]
    assert [c.source for c in answer] == [ANSWER_PLACEHOLDER]
    assert "Multiplying by 2 only changes the exponent: the mantissa is kept exactly." in solution_only_lines(nb)
