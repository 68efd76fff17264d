"""Build small notebooks in tests, with tags, without hand-writing JSON."""
import nbformat


def code(source, *tags):
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def raw(source, *tags):
    cell = nbformat.v4.new_raw_cell(source)
    cell.metadata["tags"] = list(tags)
    return cell


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["papermill"] = {"duration": 1.0}
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy notebook")] + list(cells)
    return nb


def toy_notebook():
    """One exercise (double a number) with two check cells and a wrong answer."""
    return notebook(
        code("import math\nFACTOR = 2"),
        code("def double(x):\n    '''Twice x.'''\n    ### BEGIN SOLUTION\n    secret_value = x * FACTOR\n    return secret_value\n    ### END SOLUTION", "exercise-ex99.1"),
        raw("# adds instead of multiplying\nreturn x + FACTOR", "wrong-ex99.1"),
        code("assert double(3) == 6, f'double(3) should be 6, got {double(3)}'", "check-ex99.1"),
        code("assert double(-1.5) == -3.0", "check-ex99.1.b"),
        code("print(double(10))"),
    )


def write(nb, path):
    nbformat.write(nb, str(path))
    return path


def guarded_notebook():
    """Two exercises whose checks use course_utils' helpers and NumPy, as the workbook's do: the target of the
    hostile submissions in tests/test_hostile_submissions.py."""
    return notebook(
        code("import numpy as np\nimport course_utils as cu\nfrom course_utils import assert_close, check_equal, check_that\nFACTOR = 2"),
        code("def double(x):\n    '''Twice x.'''\n    ### BEGIN SOLUTION\n    return x * FACTOR\n    ### END SOLUTION", "exercise-ex98.1"),
        raw("# adds instead of multiplying\nreturn x + FACTOR", "wrong-ex98.1"),
        code("check_equal(double(3), 6, 'double(3) is 6')", "check-ex98.1"),
        code("assert_close(double(np.arange(4.0)), 2 * np.arange(4.0), name='double(arange(4))')", "check-ex98.1.array"),
        code("def triple(x):\n    '''Three times x.'''\n    ### BEGIN SOLUTION\n    return 3 * x\n    ### END SOLUTION", "exercise-ex98.2"),
        raw("# adds instead of multiplying\nreturn x + 3", "wrong-ex98.2"),
        code("assert_close(triple(np.ones(3)), np.full(3, 3.0), name='triple(ones(3))')", "check-ex98.2"),
        code("print(double(10), triple(1))"),
    )


def markdown(source, *tags):
    cell = nbformat.v4.new_markdown_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def with_question(nb):
    """The notebook with a written question (question, model answer, rubric) at its end."""
    nb.cells += [
        markdown("**Question q99.1.** Why does doubling a float never lose precision?", "question-q99.1"),
        markdown("Multiplying by 2 only changes the exponent: the mantissa is kept exactly.", "answer-q99.1"),
        raw("2 points: names the exponent. 1 point: says 'exact' without a reason.", "rubric-q99.1"),
    ]
    return nb
