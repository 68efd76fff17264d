"""`make grade NB=...`: grade submitted notebooks in a sandbox, with checks the submission cannot stand in front of.

What runs is the instructor's notebook: every cell is the instructor's (checks, hidden checks, experiments,
parameters) except the exercise cells, which come from the submission by their `exercise-exNN.M` tag. Cells the
submission added, edited or retagged outside its exercise cells are not run, so they can neither patch the checks
nor change the experiments the checks read; an exercise cell missing from the submission leaves its stub.

The kernel runs in a sandbox (tools.sandbox: its own file system view without the instructor notebooks, other
submissions or reports, no network, resource limits, an unprivileged user) and the grader drives it from outside
(tools.kernel), cell by cell, with a timeout per cell, a cap on output, and an overall limit. Before each check the
grader restores what checks rely on (tools.kernel_guard) and has the kernel print a fresh token; after an exercise
cell, every name the notebook had bound before it, other than the ones the exercise defines, is bound back. A check
passes only when the kernel's reply says it completed and it printed the token the grader sent with it; the
report is built by the grader from those replies. A missing check cell, a dead kernel or a run out of time is a
failed check, never a lost report.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .exercises import CHECK_TAG, EXERCISE_TAG, find_exercises, stub_lines, replace_solutions
from .kernel import Limits, SandboxedKernel
from .notebooks import NOTEBOOK_DIR, cell_tags, find_notebooks, read, with_parameters

GUARD_SOURCE = (Path(__file__).with_name("kernel_guard.py")).read_text()


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
    raise LookupError(f"{submission.name}: no instructor notebook in {instructor_dir} matches it (metadata workbook.notebook or file name)")


def _python_of(source: str) -> ast.Module | None:
    """The cell as Python (IPython magics turned into calls), or None when it does not parse."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return None


def bound_names(source: str) -> set[str]:
    """Names a cell binds at its top level (functions, classes, assignments, imports)."""
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
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                targets(t)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets(node.target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.For, ast.With)):
            for item in ([node.target] if isinstance(node, ast.For) else [i.optional_vars for i in node.items if i.optional_vars]):
                targets(item)
    return names


def imported(source: str) -> tuple[set[str], set[str]]:
    """(aliases a cell binds to modules, top-level module names it imports), anywhere in the cell."""
    tree = _python_of(source)
    aliases, modules = set(), set()
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases.add(a.asname or a.name.split(".")[0])
                modules.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
            aliases |= {a.asname or a.name for a in node.names}
    return aliases, modules


@dataclass
class Step:
    kind: str                       # "setup" (an instructor cell), "exercise" or "check"
    index: int                      # the cell's index in the instructor notebook
    source: str
    id: str = ""                    # exercise or check id
    hidden: bool = False
    names: set = field(default_factory=set)   # exercise: names it may define; setup: aliases it imports


def plan(submission_nb, instructor_nb) -> tuple[list[Step], list[str]]:
    """The cells to run, in order, and the exercises the submission has no cell for."""
    submitted: dict[str, str] = {}
    for cell in submission_nb.cells:
        for tag in cell_tags(cell):
            m = EXERCISE_TAG.match(tag)
            if m and cell.cell_type == "code" and m.group(1) not in submitted:
                submitted[m.group(1)] = cell.source
    exercises = {ex.cell: ex for ex in find_exercises(instructor_nb)}
    hidden = {cid for ex in exercises.values() for cid in ex.hidden}
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
            steps.append(Step("check", index, cell.source, check_id(cell), hidden=check_id(cell) in hidden))
        else:
            steps.append(Step("setup", index, cell.source, names=imported(cell.source)[0]))
    return steps, missing


def run_steps(steps: list[Step], modules: set[str], limits: Limits, kernel_factory=SandboxedKernel) -> dict:
    """Run the plan in one sandboxed kernel; {"checks": {id: [(passed, message)]}, "errors": [...], "run": str,
    "protections": {...}}."""
    outcome = {"checks": {}, "errors": [], "run": "finished", "protections": {"on": [], "off": {}}}
    guard = "_workbook_guard_" + secrets.token_hex(8)
    try:
        kernel = kernel_factory(limits)
        kernel.start()
    except Exception as err:                                 # noqa: BLE001 (reported, never raised)
        outcome["run"] = f"the kernel did not start: {err}"
        return outcome
    try:
        outcome["protections"] = kernel.protections
        boot = kernel.run(GUARD_SOURCE + f"\n{guard} = install({sorted(modules)!r})\ndel install",
                          timeout=max(limits.cell_seconds, 120))
        ready = re.search(r"guard ready ([0-9a-f]{32})", boot.stdout)
        if boot.status != "ok" or not ready:
            outcome["run"] = f"the grader's set-up failed in the kernel: {boot.message[-500:]}"
            return outcome
        secret = ready.group(1).encode()
        for step in steps:
            if not kernel.alive():
                outcome["run"] = kernel.dead_reason
                break
            if step.kind == "check":
                nonce = secrets.token_hex(16)
                before = kernel.run(f"{guard}['prove']({nonce!r})")
                proof = hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()
                if before.status != "ok" or proof not in before.stdout:
                    result = (False, "the grader could not restore the checks' helpers before this check: "
                                     + (before.message or "the kernel did not run the grader's code as sent")[-600:])
                else:
                    token = secrets.token_hex(16)
                    r = kernel.run(step.source + f"\nprint({token!r})")
                    if r.status == "ok" and token in r.stdout:
                        result = (True, "")
                    elif r.status == "ok":
                        result = (False, "the check did not complete (its completion token never came back)")
                    else:
                        result = (False, r.message)
                outcome["checks"].setdefault(step.id, []).append(result)
                continue
            if step.kind == "exercise":
                kernel.run(f"{guard}['snapshot']()")
            r = kernel.run(step.source)
            if r.status != "ok":
                outcome["errors"].append({"cell": step.index, "message": r.message[-600:]})
            if step.kind == "exercise":
                kernel.run(f"{guard}['restore_names']({sorted(step.names)!r})")
            elif step.names:
                kernel.run(f"{guard}['remember']({sorted(step.names)!r})")
        if not kernel.alive() and outcome["run"] == "finished":
            outcome["run"] = kernel.dead_reason
    finally:
        kernel.close()
    return outcome


def grade(submission: Path, instructor_dir: Path, out_dir: Path, cell_timeout: int = 120, total_timeout: int = 1800,
          parameters: dict | None = None, limits: Limits | None = None) -> dict:
    """Grade one submission; always writes OUT/<name>.json and OUT/<name>.xml and returns the report.
    `parameters` override the notebook's parameters cell (as papermill -p does), e.g. smaller sizes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"notebook": submission.name, "instructor": None, "score": 0, "total": 0, "checks": [], "errors": [], "run": "",
              "hidden": {"passed": 0, "total": 0}, "protections": {"on": [], "off": {}}, "missing_exercises": []}
    try:
        submission_nb = read(submission)
    except Exception as err:                                 # noqa: BLE001
        submission_nb, load_error = None, f"not a readable notebook: {type(err).__name__}: {err}"
    else:
        load_error = None
    try:
        instructor_path = instructor_for(submission, submission_nb, instructor_dir)
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
        steps, report["missing_exercises"] = plan(submission_nb, instructor_nb)
        modules = set().union(*(imported(s.source)[1] for s in steps if s.kind == "setup"))
        limits = limits or Limits(cell_seconds=cell_timeout, total_seconds=total_timeout)
        outcome = run_steps(steps, modules, limits)
        results, report["errors"], report["run"] = outcome["checks"], outcome["errors"], outcome["run"]
        report["protections"] = outcome["protections"]
    for cid in expected:
        cells = results.get(cid, [])
        if load_error:
            passed, message = False, load_error
        elif not cells:
            passed, message = False, f"this check never ran ({report['run'].splitlines()[0] if report['run'] else 'no run'})"
        else:
            passed = all(ok for ok, _ in cells)
            message = "" if passed else next(m for ok, m in cells if not ok)
        ex_id = _exercise_of(cid)
        if not passed and ex_id in report["missing_exercises"]:
            message = f"{message}\n(the submission has no cell tagged exercise-{ex_id}: its stub ran instead)"
        if cid in hidden:                                 # its code and messages stay the instructor's
            message = "" if passed else f"a hidden check failed ({_exception_type(message)})"
        report["checks"].append({"id": cid, "passed": passed, "message": _last_lines(message), "hidden": cid in hidden})
    report["total"] = len(expected)
    report["score"] = sum(c["passed"] for c in report["checks"])
    report["hidden"] = {"passed": sum(c["passed"] for c in report["checks"] if c["hidden"]), "total": len(hidden)}
    return _write(report, out_dir, submission, time.perf_counter() - start)


def _exercise_of(cid: str) -> str | None:
    m = CHECK_TAG.match(f"check-{cid}")
    return m.group(2) if m else None


def _exception_type(message: str) -> str:
    """The exception's name in the last line of a failure message that names one, else "failed"."""
    for line in reversed(message.strip().splitlines()):
        m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|NotImplemented\w*)):", line.strip())
        if m:
            return m.group(1)
    return "failed"


def _last_lines(message: str, n: int = 12) -> str:
    return "\n".join(message.strip().splitlines()[-n:])


def _write(report: dict, out_dir: Path, submission: Path, seconds: float) -> dict:
    report["seconds"] = round(seconds, 1)
    (out_dir / f"{submission.stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    cases = []
    for c in report["checks"]:
        body = "" if c["passed"] else f"<failure message={quoteattr(c['message'].splitlines()[-1] if c['message'] else 'failed')}>{escape(c['message'])}</failure>"
        cases.append(f'  <testcase classname={quoteattr(submission.stem)} name={quoteattr(c["id"])}>{body}</testcase>')
    failures = report["total"] - report["score"]
    xml = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name={quoteattr(submission.name)} tests="{report["total"]}" '
           f'failures="{failures}" errors="0" time="{seconds:.1f}">\n' + "\n".join(cases) + "\n</testsuite>\n")
    (out_dir / f"{submission.stem}.xml").write_text(xml)
    return report


def print_table(reports: list[dict]) -> None:
    for r in reports:
        hidden = r.get("hidden") or {"passed": 0, "total": 0}
        print(f"\n{r['notebook']}  (vs {r['instructor']}): {r['score']}/{r['total']} checks passed"
              + (f" ({hidden['passed']}/{hidden['total']} hidden)" if hidden["total"] else "")
              + f" in {r['seconds']} s; run {r['run'].splitlines()[0] if r['run'] else '?'}")
        for c in r["checks"]:
            first = c["message"].strip().splitlines()[-1][:90] if c["message"].strip() else ""
            print(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['id'] + (' (hidden)' if c.get('hidden') else ''):<25} {first}")
    print(f"\n{'submission':<40} score")
    for r in reports:
        print(f"{r['notebook'][:40]:<40} {r['score']}/{r['total']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="a submitted notebook, or a folder of them")
    parser.add_argument("--instructor", default=str(NOTEBOOK_DIR), help="folder of instructor notebooks")
    parser.add_argument("--out", default="build/grades")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds one cell may run")
    parser.add_argument("--total-timeout", type=int, default=1800, help="seconds one whole submission may run")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter (VALUE is a Python literal), e.g. -p TRAIN_STEPS 100")
    args = parser.parse_args(argv)
    parameters = {name: ast.literal_eval(value) for name, value in args.parameter}
    reports = [grade(p, Path(args.instructor), Path(args.out), args.cell_timeout, args.total_timeout, parameters)
               for p in find_notebooks(args.target)]
    print_table(reports)
    print(f"\nreports in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
