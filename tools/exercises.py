"""The exercise format, and the student edition made from it.

An exercise is a code cell tagged `exercise-exNN.M` holding one or more solution regions between
`### BEGIN SOLUTION` and `### END SOLUTION`. It is followed by check cells tagged `check-exNN.M` (or
`check-exNN.M.a`, `check-exNN.M-name` for several), and optionally by raw cells tagged `wrong-exNN.M`, each a
plausible wrong answer (replacing the solution region) that the checks must reject. A check cell that also carries
the tag `hidden` is a hidden check: the student edition leaves it out, the grader puts it back and counts it.

A written question (for the report part: free text, or a plot to interpret) is a markdown cell tagged
`question-qNN.M`, followed by a markdown cell tagged `answer-qNN.M` (the instructor's model answer; the student
edition empties it for the students' own) and a cell tagged `rubric-qNN.M` (left out of the student edition). The
grader collects every submission's answer with the question and the rubric for the graders to mark.
See CONTRIBUTING.md.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import nbformat

from .notebooks import cell_tags

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISE_TAG = re.compile(r"^exercise-(ex\d{2}\.\d+)$")
CHECK_TAG = re.compile(r"^check-((ex\d{2}\.\d+)(?:[.-][A-Za-z0-9]+)*)$")
WRONG_TAG = re.compile(r"^wrong-(ex\d{2}\.\d+)$")
HIDDEN_TAG = "hidden"
QUESTION_TAG = re.compile(r"^question-(q\d{2}\.\d+)$")
ANSWER_TAG = re.compile(r"^answer-(q\d{2}\.\d+)$")
RUBRIC_TAG = re.compile(r"^rubric-(q\d{2}\.\d+)$")
ANSWER_PLACEHOLDER = "*Your answer here (a few sentences; cite the numbers this notebook printed).*"
KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info", "workbook")


class ExerciseFormatError(ValueError):
    """A notebook breaks the exercise format (named cell and rule in the message)."""


@dataclass
class Exercise:
    id: str
    cell: int                                          # index of the exercise cell
    checks: dict[str, list[int]] = field(default_factory=dict)  # check id -> indices of its cells
    wrong: list[int] = field(default_factory=list)    # indices of raw wrong-answer cells
    hidden: set[str] = field(default_factory=set)     # check ids left out of the student edition

    @property
    def last_check(self) -> int:
        return max(i for cells in self.checks.values() for i in cells)


def _tag_match(cell, pattern: re.Pattern) -> re.Match | None:
    matches = [m for m in (pattern.match(t) for t in cell_tags(cell)) if m]
    if len(matches) > 1:
        raise ExerciseFormatError(f"a cell carries several {pattern.pattern} tags: {[m.group(0) for m in matches]}")
    return matches[0] if matches else None


@dataclass
class Question:
    id: str
    question: int                                      # index of the question cell
    answer: int                                        # index of the answer cell (the model answer here)
    rubric: int                                        # index of the rubric cell


def find_questions(nb) -> list[Question]:
    """Every written question with its answer and rubric cells: in that order, each once, the answer in markdown."""
    found: dict[str, dict[str, int]] = {}
    for index, cell in enumerate(nb.cells):
        for kind, pattern in (("question", QUESTION_TAG), ("answer", ANSWER_TAG), ("rubric", RUBRIC_TAG)):
            m = _tag_match(cell, pattern)
            if not m:
                continue
            parts = found.setdefault(m.group(1), {})
            if kind in parts:
                raise ExerciseFormatError(f"cell {index}: {kind} of {m.group(1)} is there twice")
            if kind != "question" and "question" not in parts:
                raise ExerciseFormatError(f"cell {index}: {kind}-{m.group(1)} comes before (or without) its question cell")
            if kind in ("question", "answer") and cell.cell_type != "markdown":
                raise ExerciseFormatError(f"cell {index}: {kind}-{m.group(1)} must be a markdown cell")
            parts[kind] = index
    questions = []
    for qid, parts in found.items():
        missing = [k for k in ("answer", "rubric") if k not in parts]
        if missing:
            raise ExerciseFormatError(f"question {qid} has no {' and no '.join(missing)} cell (tag {missing[0]}-{qid})")
        questions.append(Question(qid, parts["question"], parts["answer"], parts["rubric"]))
    return questions


def solution_regions(source: str) -> list[tuple[int, int]]:
    """(begin line, end line) index pairs of the solution regions in `source`; unbalanced markers are an error."""
    regions, begin = [], None
    for i, line in enumerate(source.splitlines()):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if begin is not None:
                raise ExerciseFormatError(f"line {i + 1}: {BEGIN} inside another solution region")
            begin = i
        elif stripped.startswith(END):
            if begin is None:
                raise ExerciseFormatError(f"line {i + 1}: {END} without {BEGIN}")
            regions.append((begin, i))
            begin = None
    if begin is not None:
        raise ExerciseFormatError(f"line {begin + 1}: {BEGIN} is never closed by {END}")
    return regions


def is_student_edition(nb) -> bool:
    return (nb.metadata.get("workbook") or {}).get("edition") == "student"


def find_exercises(nb) -> list[Exercise]:
    """Every exercise of a notebook with its check and wrong-answer cells, validating the format. In a student
    edition (what the classroom workflow grades against) exercise cells hold stubs, without solution regions."""
    stubbed = is_student_edition(nb)
    exercises: dict[str, Exercise] = {}
    for index, cell in enumerate(nb.cells):
        where = f"cell {index}"
        ex, check, wrong = (_tag_match(cell, p) for p in (EXERCISE_TAG, CHECK_TAG, WRONG_TAG))
        has_markers = BEGIN in cell.source or END in cell.source
        if sum(m is not None for m in (ex, check, wrong)) > 1:
            raise ExerciseFormatError(f"{where}: a cell is either an exercise, a check or a wrong answer")
        if ex:
            if cell.cell_type != "code":
                raise ExerciseFormatError(f"{where}: exercise {ex.group(1)} must be a code cell")
            if not solution_regions(cell.source) and not stubbed:
                raise ExerciseFormatError(f"{where}: exercise {ex.group(1)} has no {BEGIN} ... {END} region")
            if ex.group(1) in exercises:
                raise ExerciseFormatError(f"{where}: exercise {ex.group(1)} is defined twice")
            exercises[ex.group(1)] = Exercise(ex.group(1), index)
        elif has_markers and not wrong:
            raise ExerciseFormatError(f"{where}: solution markers outside an exercise cell (tag it exercise-exNN.M)")
        if check:
            owner = exercises.get(check.group(2))
            if owner is None:
                raise ExerciseFormatError(f"{where}: check {check.group(1)} comes before (or without) exercise {check.group(2)}")
            if cell.cell_type != "code":
                raise ExerciseFormatError(f"{where}: check {check.group(1)} must be a code cell")
            if (HIDDEN_TAG in cell_tags(cell)) != (check.group(1) in owner.hidden) and check.group(1) in owner.checks:
                raise ExerciseFormatError(f"{where}: check {check.group(1)} is hidden in some of its cells only")
            owner.checks.setdefault(check.group(1), []).append(index)
            if HIDDEN_TAG in cell_tags(cell):
                owner.hidden.add(check.group(1))
        elif HIDDEN_TAG in cell_tags(cell):
            raise ExerciseFormatError(f"{where}: only a check cell can be hidden")
        if wrong:
            owner = exercises.get(wrong.group(1))
            if owner is None or cell.cell_type != "raw":
                raise ExerciseFormatError(f"{where}: wrong answer {wrong.group(1)} must be a raw cell after its exercise")
            owner.wrong.append(index)
    for ex in exercises.values():
        for w in ex.wrong:
            _check_wrong_answer(nb, ex, w)
        if not ex.checks:
            raise ExerciseFormatError(f"exercise {ex.id} (cell {ex.cell}) has no check cell tagged check-{ex.id}")
        if ex.hidden and ex.hidden == set(ex.checks):
            raise ExerciseFormatError(f"exercise {ex.id}: every check is hidden; keep at least one visible check")
        if ex.wrong and len(solution_regions(nb.cells[ex.cell].source)) != 1:
            raise ExerciseFormatError(f"exercise {ex.id}: wrong answers need exactly one solution region")
    return list(exercises.values())


def _check_wrong_answer(nb, ex: "Exercise", index: int) -> None:
    """A wrong answer starts with a `# reason` comment line and, put in place of the solution, compiles: a probe
    that runs a SyntaxError proves nothing about the checks."""
    lines = nb.cells[index].source.splitlines()
    if not lines or not lines[0].lstrip().startswith("#") or not lines[0].lstrip("# ").strip():
        raise ExerciseFormatError(f"cell {index}: wrong answer {ex.id} must start with a '# why it is wrong' comment line")
    if len(solution_regions(nb.cells[ex.cell].source)) != 1:
        return                                           # reported below with its own message
    source = wrong_answer_source(nb, ex, index)
    try:
        compile("\n".join(l for l in source.splitlines() if not l.lstrip().startswith(("%", "!"))), f"<cell {index}>", "exec")
    except SyntaxError as err:
        raise ExerciseFormatError(f"cell {index}: wrong answer {ex.id} does not compile in place of the solution "
                                  f"(line {err.lineno}: {err.msg})") from None


def replace_solutions(source: str, replacement) -> str:
    """Replace each solution region (markers included) by `replacement(indent)` -> list of lines, re-indented."""
    lines = source.splitlines()
    out, last = [], 0
    for begin, end in solution_regions(source):
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        out += lines[last:begin]
        out += [indent + l if l.strip() else l for l in replacement(indent)]
        last = end + 1
    out += lines[last:]
    return "\n".join(out)


def stub_lines(exercise_id: str) -> list[str]:
    return [
        f"# YOUR CODE HERE (exercise {exercise_id})",
        f'raise NotImplementedError("Exercise {exercise_id} is not solved yet: replace this line with your solution.")',
    ]


def wrong_answer_source(nb, exercise: Exercise, wrong_cell: int) -> str:
    """The exercise cell with its solution region replaced by the code of a wrong-answer cell."""
    body = nb.cells[wrong_cell].source.splitlines()
    return replace_solutions(nb.cells[exercise.cell].source, lambda indent: body)


def hidden_check_cells(nb, exercises: list[Exercise] | None = None) -> list[int]:
    """Indices of the hidden check cells, in notebook order."""
    exercises = find_exercises(nb) if exercises is None else exercises
    return sorted(i for ex in exercises for cid in ex.hidden for i in ex.checks[cid])


def student_edition(nb, notebook_name: str):
    """A copy of `nb` without solutions, wrong answers, hidden checks, outputs, execution counts or any metadata
    but tags."""
    found = find_exercises(nb)
    exercises = {ex.cell: ex for ex in found}
    hidden = set(hidden_check_cells(nb, found))
    questions = find_questions(nb)
    hidden |= {q.rubric for q in questions}
    answers = {q.answer for q in questions}
    student = nbformat.v4.new_notebook()
    student.metadata = {k: copy.deepcopy(v) for k, v in nb.metadata.items() if k in KEPT_NOTEBOOK_METADATA}
    student.metadata["workbook"] = {"notebook": notebook_name, "edition": "student"}
    for index, cell in enumerate(nb.cells):
        if _tag_match(cell, WRONG_TAG) or index in hidden:
            continue
        source = cell.source
        if index in exercises:
            source = replace_solutions(source, lambda indent, ex=exercises[index]: stub_lines(ex.id))
        elif index in answers:
            source = ANSWER_PLACEHOLDER
        new = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell, "raw": nbformat.v4.new_raw_cell}[cell.cell_type](source)
        if cell.get("id"):
            new["id"] = cell["id"]
        if cell_tags(cell):
            new.metadata["tags"] = cell_tags(cell)
        if cell.cell_type == "markdown" and cell.get("attachments") and index not in answers:
            new["attachments"] = copy.deepcopy(cell["attachments"])  # question figures; solutions live in code cells only
        student.cells.append(new)
    nbformat.validate(student)
    return student


def solution_only_lines(nb) -> set[str]:
    """Stripped lines that appear in a solution region, a wrong answer, a hidden check, a model answer or a rubric,
    and nowhere else in the notebook."""
    exercises = find_exercises(nb)
    secret: set[str] = set()
    hidden_checks = set(hidden_check_cells(nb, exercises))
    questions = find_questions(nb)
    hidden_cells_extra = {q.answer for q in questions} | {q.rubric for q in questions}
    for i in hidden_checks | hidden_cells_extra:
        secret |= {l.strip() for l in nb.cells[i].source.splitlines()}
    hidden_cells = {ex.cell for ex in exercises} | {w for ex in exercises for w in ex.wrong} | hidden_checks | hidden_cells_extra
    for ex in exercises:
        lines = nb.cells[ex.cell].source.splitlines()
        for begin, end in solution_regions(nb.cells[ex.cell].source):
            secret |= {l.strip() for l in lines[begin + 1:end]}
        for w in ex.wrong:
            secret |= {l.strip() for l in nb.cells[w].source.splitlines()}
    public: set[str] = set()
    for index, cell in enumerate(nb.cells):
        if index in hidden_cells:
            if index in {ex.cell for ex in exercises}:
                public |= {l.strip() for l in replace_solutions(cell.source, lambda i: []).splitlines()}
            continue
        public |= {l.strip() for l in cell.source.splitlines()}
    return {l for l in secret - public if l}
