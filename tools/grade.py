"""`make grade NB=...`: grade submitted notebooks in a sandbox, with checks the submission cannot stand in front of.

What runs is the instructor's notebook: every cell is the instructor's (checks, hidden checks, experiments,
parameters) except the exercise cells, which come from the submission by their `exercise-exNN.M` tag. Cells the
submission added, edited or retagged outside its exercise cells are not run, so they can neither patch the checks
nor change the experiments the checks read; an exercise cell missing from the submission leaves its stub.

Two kernels run, each in a sandbox (tools.sandbox: its own file system view without the instructor notebooks, other
submissions or reports, no network, resource limits, an unprivileged user), driven by the grader from outside
(tools.kernel) cell by cell, with a timeout per cell, a cap on output, and an overall limit: the submission's kernel
runs the exercise cells, and the judge (tools.judge) runs the checks, calling the submission's functions across a
wire that carries data only (tools.judge_wire). A check passes when the judge's cell completed; the report is built
by the grader from the kernels' replies. A missing check cell, a dead kernel or a run out of time is a failed check,
never a lost report.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .exercises import (ANSWER_PLACEHOLDER, ANSWER_TAG, CHECK_TAG, EXERCISE_TAG, find_exercises, find_questions,
                        replace_solutions, stub_lines)
from .judge import run_steps_apart
from .kernel import Limits
from .notebooks import NOTEBOOK_DIR, cell_tags, read, with_parameters

def check_id(cell) -> str | None:
    for tag in cell_tags(cell):
        m = CHECK_TAG.match(tag)
        if m:
            return m.group(1)
    return None


def instructor_for(submission: Path, nb, instructor_dir: Path) -> Path:
    """The instructor notebook a submission answers: named in its metadata, else by file name."""
    named = (nb.metadata.get("workbook") or {}).get("notebook") if nb is not None else None
    candidates = [instructor_dir / Path(named).name] if isinstance(named, str) and named else []
    candidates += [p for p in sorted(instructor_dir.glob("*.ipynb")) if p.stem in submission.stem]
    for path in candidates:
        if path.is_file():
            return path
    raise LookupError(f"{display_name(submission)}: no instructor notebook in {instructor_dir} matches it (metadata workbook.notebook or file name)")


def _python_of(source: str) -> ast.Module | None:
    """The cell as Python (IPython magics turned into calls), or None when it does not parse."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return None


def bound_names(source: str) -> set[str]:
    """Names a cell binds in the notebook's namespace: at its top level, or inside its if/for/while/with/try
    blocks (functions, classes, assignments, imports, loop and `with` targets, walrus), but not inside the
    functions and classes it defines."""
    tree = _python_of(source)
    names: set[str] = set()
    if tree is None:
        return names

    def targets(node):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            for d in node.decorator_list:
                visit(d)
            return                                   # its body binds names of its own scope
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Assign):
            for t in node.targets:
                targets(t)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
            targets(node.target)
        elif isinstance(node, ast.NamedExpr):
            targets(node.target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            targets(node.optional_vars)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def empty_report(notebook: str, run: str = "", **fields) -> dict:
    """A report with no check run yet (every field the gradebook, feedback and Gradescope read), `run` saying why."""
    report = {"notebook": notebook, "instructor": None, "score": 0, "total": 0, "checks": [], "errors": [], "run": run,
              "hidden": {"passed": 0, "total": 0}, "protections": {"on": [], "off": {}}, "missing_exercises": [],
              "members": [], "fingerprint": ""}
    report.update(fields)
    return report


@dataclass
class Step:
    kind: str                       # "setup" (an instructor cell), "exercise" or "check"
    index: int                      # the cell's index in the instructor notebook
    source: str
    id: str = ""                    # exercise or check id
    names: set = field(default_factory=set)   # exercise: names it may define; setup: names it binds


def plan(submission_nb, instructor_nb, exercises: list) -> tuple[list[Step], list[str]]:
    """The cells to run, in order, and the exercises (of `exercises`, the instructor's) the submission has no cell
    for."""
    submitted: dict[str, str] = {}
    for cell in submission_nb.cells:
        for tag in cell_tags(cell):
            m = EXERCISE_TAG.match(tag)
            if m and cell.cell_type == "code" and m.group(1) not in submitted:
                submitted[m.group(1)] = cell.source
    exercises = {ex.cell: ex for ex in exercises}
    steps, missing = [], []
    for index, cell in enumerate(instructor_nb.cells):
        if cell.cell_type != "code":
            continue
        if index in exercises:
            ex = exercises[index]
            source = submitted.get(ex.id)
            if source is None:
                missing.append(ex.id)
                source = replace_solutions(cell.source, lambda indent, i=ex.id: stub_lines(i))
            steps.append(Step("exercise", index, source, ex.id, names=bound_names(cell.source)))
        elif check_id(cell):
            steps.append(Step("check", index, cell.source, check_id(cell)))
        else:
            steps.append(Step("setup", index, cell.source, names=bound_names(cell.source)))
    return steps, missing


WITHHELD = ("(its text is withheld from the feedback: it came after a hidden check, and code of the submission's "
            "that ran in that check could put what it saw there into an error or a check's message)")
# Errors in cells after a hidden check are not listed at all: whether a cell failed is the submission's to decide,
# so even "an error in cell N (withheld)" told a submission one bit of what a hidden check handed it, per cell and
# with no mark lost (red team round 2, session 42: a hidden input found by bisection over resubmissions). The line
# below is the same in every report that has hidden checks.
ERRORS_AFTER_HIDDEN = ("Errors in cells that ran after a hidden check are not shown here (they are in the graders' "
                       "report).")


def shown_errors(report: dict) -> list[dict]:
    """The errors of cells (not checks) that students are shown: those before the first hidden check. The feedback
    and Gradescope's output list these, and say ERRORS_AFTER_HIDDEN wherever there are hidden checks."""
    return [e for e in report.get("errors", []) if not e.get("after_hidden")]


def grade(submission: Path, instructor_dir: Path, out_dir: Path, cell_timeout: int = 120, total_timeout: int = 1800,
          parameters: dict | None = None, limits: Limits | None = None, fingerprint: str = "", expected: str | None = None) -> dict:
    """Grade one submission; always writes OUT/<name>.json and OUT/<name>.xml and returns the report.
    `parameters` override the notebook's parameters cell (as papermill -p does), e.g. smaller sizes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = empty_report(display_name(submission), fingerprint=fingerprint)
    try:
        if submission.is_symlink() or not submission.is_file():   # a link could name any file the grader can read
            raise ValueError("not a regular file (a symbolic link or something else): hand in the notebook itself")
        submission_nb = read(submission)
    except Exception as err:                                 # noqa: BLE001
        submission_nb, load_error = None, f"not a readable notebook: {type(err).__name__}: {err}"
    else:
        load_error = None
        report["members"] = group_members(submission_nb)
        report["written"] = written_answers(submission_nb)
    named = ((submission_nb.metadata.get("workbook") or {}).get("notebook") if submission_nb is not None else None)
    if expected and isinstance(named, str) and Path(named).name != expected:
        report["run"] = f"a submission for {Path(named).name}, not for {expected}: nothing was graded"
        return _write(report, out_dir, submission, time.perf_counter() - start)
    try:                                   # the expected notebook whatever the file is called, else the one it names
        instructor_path = instructor_dir / expected if expected else instructor_for(submission, submission_nb, instructor_dir)
        if not instructor_path.is_file():
            raise LookupError(f"no instructor notebook {instructor_path.name} in {instructor_dir}")
    except LookupError as err:
        report["run"] = str(err)
        return _write(report, out_dir, submission, time.perf_counter() - start)
    instructor_nb = with_parameters(read(instructor_path), parameters)
    report["instructor"] = instructor_path.name
    exercises = find_exercises(instructor_nb)
    expected = [cid for ex in exercises for cid in ex.checks]
    hidden = {cid for ex in exercises for cid in ex.hidden}
    results: dict[str, list] = {}
    if load_error:
        report["run"] = load_error
    else:
        steps, report["missing_exercises"] = plan(submission_nb, instructor_nb, exercises)
        limits = limits or Limits(cell_seconds=cell_timeout, total_seconds=total_timeout)
        outcome = run_steps_apart(steps, limits, hidden=frozenset(hidden))     # checks in a judge of their own
        results, report["errors"], report["run"] = outcome["checks"], outcome["errors"], outcome["run"]
        report["protections"] = outcome["protections"]
    for cid in expected:
        cells = results.get(cid, [])
        if load_error:
            passed, message = False, load_error
        elif not cells:
            passed, message = False, f"this check never ran ({report['run'].splitlines()[0] if report['run'] else 'no run'})"
        else:
            passed = all(cell[0] for cell in cells)
            message, withheld = ("", False) if passed else next((m, w) for ok, m, w in cells if not ok)
        ex_id = _exercise_of(cid)
        if not passed and ex_id in report["missing_exercises"]:
            message = f"{message}\n(the submission has no cell tagged exercise-{ex_id}: its stub ran instead)"
        if cid in hidden:                                 # its code and messages stay the instructor's
            message = "" if passed else f"a hidden check failed ({_exception_type(message)})"
        report["checks"].append({"id": cid, "passed": passed, "message": _last_lines(message), "hidden": cid in hidden,
                                 "after_hidden": bool(cells) and not passed and withheld})
    report["total"] = len(expected)
    report["score"] = sum(c["passed"] for c in report["checks"])
    report["hidden"] = {"passed": sum(c["passed"] for c in report["checks"] if c["hidden"]), "total": len(hidden)}
    return _write(report, out_dir, submission, time.perf_counter() - start)


def _exercise_of(cid: str) -> str | None:
    m = CHECK_TAG.match(f"check-{cid}")
    return m.group(2) if m else None


def _exception_type(message: str) -> str:
    """The exception's name in the last line of a failure message, when it is one of Python's own (a class the
    submission defined could carry a message of its choosing in its name), else "failed"."""
    import builtins

    for line in reversed(message.strip().splitlines()):
        m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration)):", line.strip())
        if m:
            name = m.group(1)
            known = isinstance(getattr(builtins, name, None), type) and issubclass(getattr(builtins, name), BaseException)
            return name if known else "failed"
    return "failed"


def _last_lines(message: str, n: int = 12) -> str:
    return "\n".join(message.strip().splitlines()[-n:])


def _text(name: str) -> str:
    """A file name (or part of one) as text every report can hold: itself when it is valid UTF-8; otherwise its
    bytes with the invalid ones written as \\xNN, plus a short hash of the raw bytes (so two such names never meet)."""
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace") + "~" + hashlib.sha256(raw).hexdigest()[:8]


def display_name(path: Path) -> str:
    return _text(path.name)


NOT_A_NOTEBOOK = ".not-a-notebook"
KEY_BYTES = 160        # a report's file name, key and suffix, stays well under the 255 bytes a file system allows


def report_key(path: Path) -> str:
    """The name of a submission's report files, one per file name: its stem for a notebook; a file that is not one
    keeps its whole name, marked, so that `alice.pdf` and `alice.ipynb` in one folder never share a report. A
    notebook whose stem ends with the mark gets a hash of its name (`alice.pdf.not-a-notebook.ipynb` would otherwise
    overwrite `alice.pdf`'s reports: red team, session 42), and so do a name holding a backslash and a key too long
    for a file name (a 250-byte name, or 120 bytes that are not UTF-8 and come out four times longer, stopped the
    whole batch)."""
    raw = os.fsencode(path.name)
    marked = path.suffix != ".ipynb"
    key = f"{display_name(path)}{NOT_A_NOTEBOOK}" if marked else _text(path.stem)
    # A name that is not UTF-8 is written with \xNN escapes and a hash of its bytes (_text); a name that is UTF-8 and
    # holds a backslash could spell that same key, so it gets a hash of its own (red team, session 42).
    encoded = key.encode("utf-8", "surrogatepass")
    if (not marked and key.endswith(NOT_A_NOTEBOOK)) or "\\" in path.name or len(encoded) > KEY_BYTES:
        head = encoded[:KEY_BYTES - 16].decode("utf-8", "ignore")
        key = f"{head}~{hashlib.sha256(raw).hexdigest()[:12]}"
    return key


def _xml_text(text: str) -> str:
    """Text XML 1.0 allows: control characters (other than tab and newlines) removed, then escaped."""
    return escape(re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", text))


def _xml_attr(text: str) -> str:
    return quoteattr(re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", text))


def _write(report: dict, out_dir: Path, submission: Path, seconds: float) -> dict:
    report["seconds"] = round(seconds, 1)
    key = report_key(submission)
    (out_dir / f"{key}.json").write_text(json.dumps(report, indent=2) + "\n")
    cases = []
    for c in report["checks"]:
        body = "" if c["passed"] else f"<failure message={_xml_attr(c['message'].splitlines()[-1] if c['message'] else 'failed')}>{_xml_text(c['message'])}</failure>"
        cases.append(f'  <testcase classname={_xml_attr(key)} name={_xml_attr(c["id"])}>{body}</testcase>')
    failures = report["total"] - report["score"]
    xml = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name={_xml_attr(display_name(submission))} tests="{report["total"]}" '
           f'failures="{failures}" errors="0" time="{seconds:.1f}">\n' + "\n".join(cases) + "\n</testsuite>\n")
    (out_dir / f"{key}.xml").write_text(xml, errors="backslashreplace")
    (out_dir / f"{key}.md").write_text(feedback(report), errors="backslashreplace")
    return report


def _fenced(text: str) -> list[str]:
    """A fenced block that `text` cannot close: the fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence]


def _inline(text: str) -> str:
    """`text` (a name, a file name) as plain text on one Markdown line: no heading, link, table cell or HTML of its
    own."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", " ".join(str(text).split()))


def feedback(report: dict) -> str:
    """What the students of one submission read: every check, passed or not, with the failure's message (which
    carries the check's hint); a hidden check's result without its code; cells that failed; what did not run."""
    lines = [f"# Feedback: {_inline(report['notebook'])}", ""]
    if report.get("members"):
        lines += ["Group: " + ", ".join(_inline(m) for m in report["members"]), ""]
    if report.get("instructor"):
        lines += [f"Notebook: {_inline(report['instructor'])}. Checks passed: **{report['score']} of {report['total']}**"
                  + (f" (hidden: {report['hidden']['passed']} of {report['hidden']['total']})" if report["hidden"]["total"] else "")
                  + ".", ""]
    if report.get("run") and report["run"] != "finished":
        lines += [f"**The run did not finish normally:** {_inline(report['run'].splitlines()[0])}", ""]
    for ex in report.get("missing_exercises", []):
        lines += [f"- The submission has no cell tagged `exercise-{ex}`; its stub was graded.", ""]
    if report["checks"]:
        lines += ["| check | result |", "|---|---|"]
        lines += [f"| {c['id']}{' (hidden)' if c['hidden'] else ''} | {'passed' if c['passed'] else 'failed'} |" for c in report["checks"]]
        lines.append("")
    for c in report["checks"]:
        if not c["passed"] and c["message"]:
            lines += [f"## {c['id']}: failed", "", *_fenced(WITHHELD if c.get("after_hidden") else c["message"]), ""]
    for e in shown_errors(report):
        lines += [f"## An error in cell {e['cell']} (not a check)", "", *_fenced(_last_lines(e["message"])), ""]
    if report["hidden"]["total"]:
        lines += [ERRORS_AFTER_HIDDEN, ""]
    off = (report.get("protections") or {}).get("off") or {}
    if off:
        lines += ["Grading ran with these protections off: " + "; ".join(f"{k} ({v})" for k, v in off.items()), ""]
    return "\n".join(lines).rstrip() + "\n"


def written_answers(nb) -> dict[str, str]:
    """The submission's answer to each written question (the first markdown cell tagged answer-qNN.M; '' when it
    left the placeholder)."""
    answers: dict[str, str] = {}
    for cell in nb.cells:
        for tag in cell_tags(cell):
            m = ANSWER_TAG.match(tag)
            if m and cell.cell_type == "markdown" and m.group(1) not in answers:
                text = cell.source.strip()
                answers[m.group(1)] = "" if text == ANSWER_PLACEHOLDER else text
    return answers


def write_written(reports: list[dict], instructor_dir: Path, out_dir: Path) -> list[Path]:
    """For each notebook with written questions: written/<notebook>.md (each question, its rubric, then every
    submission's answer, for the graders to mark) and written/<notebook>.csv (one row per submission, a column per
    question, empty for the marks)."""
    import csv

    written = []
    for name in sorted({r["instructor"] for r in reports if r.get("instructor")}):
        nb = read(instructor_dir / name)
        questions = find_questions(nb)
        if not questions:
            continue
        ours = [r for r in reports if r.get("instructor") == name]
        folder = out_dir / "written"
        folder.mkdir(exist_ok=True)
        lines = [f"# Written answers: {name}", "", f"{len(ours)} submissions; mark them in {Path(name).stem}.csv.", ""]
        for q in questions:
            lines += [f"## {q.id}", "", nb.cells[q.question].source.strip(), "", "**Rubric**", "",
                      nb.cells[q.rubric].source.strip(), ""]
            for r in ours:                 # each answer fenced, names escaped: an answer cannot forge another's
                who = "; ".join(_inline(m) for m in r.get("members") or []) or "(no members listed)"
                answer = (r.get("written") or {}).get(q.id, "")
                lines += [f"### {_inline(r['notebook'])}: {who}", "", *(_fenced(answer) if answer else ["*(no answer)*"]), ""]
        md = folder / f"{Path(name).stem}.md"
        md.write_text("\n".join(lines).rstrip() + "\n", errors="backslashreplace")
        with (folder / f"{Path(name).stem}.csv").open("w", newline="", errors="backslashreplace") as f:
            writer = csv.writer(f)
            writer.writerow(["submission", "members"] + [q.id for q in questions])
            for r in ours:
                writer.writerow([_cell(r["notebook"]), _cell("; ".join(r.get("members") or []))] + [""] * len(questions))
        written.append(md)
    return written


def group_members(nb) -> list[str]:
    """The group's members: metadata workbook.group (a list of strings), else the lines of the markdown cell tagged
    `group` that start with '-' (a line of placeholders in parentheses only is skipped)."""
    listed = (nb.metadata.get("workbook") or {}).get("group")
    if isinstance(listed, list) and all(isinstance(m, str) for m in listed) and any(m.strip() for m in listed):
        return [m.strip() for m in listed if m.strip()][:8]
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "group" in cell_tags(cell):
            members = [l.strip()[1:].strip() for l in cell.source.splitlines() if l.strip().startswith("-")]
            return [m for m in members if re.sub(r"\([^)]*\)|[\s,;]", "", m)][:8]   # not "(name), (student id)"
    return []


def _printable(text) -> str:
    """`text` for the grader's terminal: control and format characters (escapes that move the cursor or erase a
    line, carriage returns, bidirectional overrides) shown as \\uXXXX, so a submission's message or file name cannot
    rewrite what the table says (red team, session 42: fake PASS lines and a fake score)."""
    import unicodedata

    return "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cc", "Cf") and ch != "\t" else ch for ch in str(text))


def print_table(reports: list[dict]) -> None:
    print(_table_text(reports))


def _table_text(reports: list[dict]) -> str:
    lines = []
    for r in reports:
        hidden = r.get("hidden") or {"passed": 0, "total": 0}
        lines += ["", f"{r['notebook']}  (vs {r['instructor']}): {r['score']}/{r['total']} checks passed"
                  + (f" ({hidden['passed']}/{hidden['total']} hidden)" if hidden["total"] else "")
                  + f" in {r['seconds']} s; run {r['run'].splitlines()[0] if r['run'] else '?'}"]
        for c in r["checks"]:
            first = c["message"].strip().splitlines()[-1][:90] if c["message"].strip() else ""
            lines.append(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['id'] + (' (hidden)' if c.get('hidden') else ''):<25} {first}")
    lines += ["", f"{'submission':<40} score"]
    lines += [f"{r['notebook'][:40]:<40} {r['score']}/{r['total']}" for r in reports]
    return "\n".join(_printable(line) for line in lines)


GRADEBOOK_FIXED = ["submission", "members", "notebook", "total", "max", "hidden_passed", "hidden_total", "written",
                   "seconds", "status", "fingerprint"]
GRADER_FAILURES = ("the kernel did not start", "the grader failed", "the grader's set-up failed")


def _cell(value) -> str:
    """A spreadsheet cell that a spreadsheet will not run: text starting with = + - @ (a formula) gets a quote."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def submission_files(target: Path) -> list[Path]:
    """A file, or every visible regular file of a folder (not only notebooks: anything a student handed in gets a
    row), sorted."""
    if target.is_file() or target.is_symlink():
        return [target]
    if target.is_dir():                    # links get a row too (graded 0: a link is not a notebook handed in)
        return sorted(p for p in target.iterdir() if (p.is_file() or p.is_symlink()) and not p.name.startswith("."))
    raise FileNotFoundError(f"{target} does not exist")


def grading_digest(instructor_dir: Path, parameters: dict | None, limits: Limits | None,
                   expected: str | None = None, timeouts: tuple = ()) -> bytes:
    """What every report of a class depends on besides its submission: the instructor notebooks, the grader's and
    course_utils' code, and the settings (read once per class, not once per submission)."""
    h = hashlib.sha256()
    for p in sorted(instructor_dir.glob("*.ipynb")):
        h.update(p.name.encode() + p.read_bytes())
    here = Path(__file__).parent
    for p in sorted(here.glob("*.py")) + sorted((here.parent / "course_utils").glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    h.update(json.dumps([parameters or {}, repr(limits), expected, list(timeouts)], sort_keys=True, default=str).encode())
    return h.digest()


def fingerprint(submission: Path, grading: bytes) -> str:
    """A submission's bytes with `grading_digest`: a submission whose fingerprint matches its report's is not
    graded again."""
    content = ("link:" + os.readlink(submission)).encode() if submission.is_symlink() else submission.read_bytes()
    return hashlib.sha256(grading + content).hexdigest()


def shared_cores(limits: Limits | None, jobs: int) -> Limits | None:
    """`limits` with torch's threads per kernel set to the machine's cores shared among `jobs` submissions graded at
    once, unless the grader chose them (OMP_NUM_THREADS, or the sandbox setting threads). Each submission's kernel
    and its judge take turns, so `jobs` kernels compute at a time; with a two-thread OpenMP pool each on two cores,
    their threads wait at every barrier for a descheduled partner (in `make test`'s unit phase, where gradings run
    side by side, grading an untouched student edition of 07 took 74 s with two threads per kernel, 39 s with one,
    and 20 s alone). A grade's fingerprint leaves the threads out: one thread or two grade alike."""
    if jobs < 2 or "OMP_NUM_THREADS" in os.environ or (limits and "threads" in limits.sandbox):
        return limits
    limits = limits or Limits()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return replace(limits, sandbox={**limits.sandbox, "threads": threads})


def grade_all(target: Path, instructor_dir: Path, out_dir: Path, jobs: int = 1, cell_timeout: int = 120,
              total_timeout: int = 1800, parameters: dict | None = None, limits: Limits | None = None,
              resume: bool = True, expected: str | None = None) -> list[dict]:
    """Grade every submission in `target` (`jobs` at a time), skipping those already graded with the same
    fingerprint, and write OUT/gradebook.csv; returns the reports in file order. With `expected` (an instructor
    notebook's file name), a notebook for another chapter gets 0 and says so."""
    from concurrent.futures import ThreadPoolExecutor

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = submission_files(target)
    grading = grading_digest(instructor_dir, parameters, limits, expected, (cell_timeout, total_timeout))
    # the time limits asked for, before shared_cores fills in the threads (which once made them Limits()'s defaults,
    # 120 s and 1800 s, whenever two or more were graded at a time: red team, session 42)
    limits = shared_cores(limits or Limits(cell_seconds=cell_timeout, total_seconds=total_timeout), jobs)

    def one(path: Path) -> dict:
        try:
            return graded(path)
        except Exception as err:                             # noqa: BLE001: one submission never stops the class
            # even its report files could not be written: its gradebook row still says so
            try:
                digest = fingerprint(path, grading)
            except OSError:
                digest = ""
            report = empty_report(display_name(path), f"the grader failed on this submission and could not write its "
                                  f"report: {type(err).__name__}: {err}", fingerprint=digest)
            report["seconds"] = 0.0
            return report

    def graded(path: Path) -> dict:
        digest = fingerprint(path, grading)
        previous = out_dir / f"{report_key(path)}.json"
        if resume and previous.is_file():
            try:
                old = json.loads(previous.read_text())
            except ValueError:
                old = {}
            # a report the grader itself failed to produce (no kernel, an internal error) is never reused
            if old.get("fingerprint") == digest and not str(old.get("run", "")).startswith(GRADER_FAILURES):
                old["resumed"] = True
                return old
        if path.suffix != ".ipynb":
            start = time.perf_counter()
            report = empty_report(display_name(path), "not a notebook (.ipynb): nothing was graded", fingerprint=digest)
            return _write(report, out_dir, path, time.perf_counter() - start)
        try:
            return grade(path, instructor_dir, out_dir, cell_timeout, total_timeout, parameters, limits,
                         fingerprint=digest, expected=expected)
        except Exception as err:                             # noqa: BLE001: one submission never stops the class
            report = empty_report(display_name(path), f"the grader failed on this submission: {type(err).__name__}: {err}",
                                  fingerprint=digest)
            return _write(report, out_dir, path, 0.0)

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads: each waits on its own kernel process
        reports = list(pool.map(one, files))
    write_gradebook(reports, out_dir / "gradebook.csv")
    write_written(reports, instructor_dir, out_dir)
    return reports


def write_gradebook(reports: list[dict], path: Path) -> None:
    """One row per submission: its members, its notebook, checks passed per exercise, total and maximum, hidden
    checks passed, the written part (empty until the graders mark it), time and how the run ended."""
    import csv

    exercises = sorted({_exercise_of(c["id"]) for r in reports for c in r["checks"]})
    with path.open("w", newline="", errors="backslashreplace") as f:
        writer = csv.writer(f)
        writer.writerow(GRADEBOOK_FIXED[:3] + exercises + GRADEBOOK_FIXED[3:])
        for r in reports:
            per = {ex: "" for ex in exercises}
            for ex in {_exercise_of(c["id"]) for c in r["checks"]}:
                per[ex] = sum(c["passed"] for c in r["checks"] if _exercise_of(c["id"]) == ex)
            writer.writerow([_cell(v) for v in [r["notebook"], "; ".join(r.get("members", [])), r.get("instructor") or ""]]
                            + [per[ex] for ex in exercises]
                            + [r["score"], r["total"], r["hidden"]["passed"], r["hidden"]["total"], "",
                               r.get("seconds", ""), _cell((r["run"] or "").splitlines()[0] if r["run"] else ""),
                               r.get("fingerprint", "")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="a submitted notebook, or a folder of submissions")
    parser.add_argument("--instructor", default=str(NOTEBOOK_DIR), help="folder of instructor notebooks")
    parser.add_argument("--out", default="build/grades")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded at the same time")
    parser.add_argument("--notebook", default=None, help="the instructor notebook every submission must answer (file name)")
    parser.add_argument("--no-resume", action="store_true", help="grade again even when a report is up to date")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds one cell may run")
    parser.add_argument("--total-timeout", type=int, default=1800, help="seconds one whole submission may run")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter (VALUE is a Python literal), e.g. -p TRAIN_STEPS 100")
    args = parser.parse_args(argv)
    parameters = {name: ast.literal_eval(value) for name, value in args.parameter}
    reports = grade_all(Path(args.target), Path(args.instructor), Path(args.out), args.jobs, args.cell_timeout,
                        args.total_timeout, parameters, resume=not args.no_resume, expected=args.notebook)
    print_table(reports)
    print(f"\nreports, feedback and gradebook.csv in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
