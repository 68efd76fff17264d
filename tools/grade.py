"""`make grade NB=...`: grade submitted notebooks by executing them under nbval with the instructor's checks.

For each submission: every check cell (tag `check-...`) gets the instructor's source and metadata back, so an
edited check counts for nothing; the hidden checks (left out of the student edition) are put back after each
exercise's last visible check, and the report says how many passed without showing their code or messages; the
notebook runs under nbval in a temporary folder with a per-cell timeout and an overall one; a report goes to
OUT/<name>.json and OUT/<name>.xml (JUnit), and a table to stdout. A missing check cell, a dead kernel or a run
out of time is a failed check, never a lost report.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import nbformat

from course_utils.processes import kill_tree

from .exercises import CHECK_TAG, find_exercises, hidden_check_cells
from .notebooks import NOTEBOOK_DIR, ROOT, cell_tags, find_notebooks, read, with_parameters


def check_id(cell) -> str | None:
    for tag in cell_tags(cell):
        m = CHECK_TAG.match(tag)
        if m:
            return m.group(1)
    return None


def exercise_of_check(cid: str | None) -> str | None:
    """"ex01.2" for the check id "ex01.2.b" (or "ex01.2-name", "ex01.2")."""
    m = CHECK_TAG.match(f"check-{cid}") if cid else None
    return m.group(2) if m else None


def instructor_for(submission: Path, nb, instructor_dir: Path) -> Path:
    """The instructor notebook a submission answers: named in its metadata, else by file name."""
    named = (nb.metadata.get("workbook") or {}).get("notebook") if nb is not None else None
    candidates = [instructor_dir / named] if named else []
    candidates += [p for p in sorted(instructor_dir.glob("*.ipynb")) if p.stem in submission.stem]
    for path in candidates:
        if path.is_file():
            return path
    raise LookupError(f"{submission.name}: no instructor notebook in {instructor_dir} matches it (metadata workbook.notebook or file name)")


def graded_copy(submission_nb, instructor_nb):
    """The submission with every known check cell reset to the instructor's, unknown check tags removed, and the
    instructor's hidden check cells in place: right after the exercise's last visible check (or its exercise cell,
    or at the end), whatever the submission holds under their tags."""
    reference = {check_id(c): c for c in instructor_nb.cells if check_id(c)}
    exercises = find_exercises(instructor_nb)
    hidden_ids = {cid for ex in exercises for cid in ex.hidden}
    graded = copy.deepcopy(submission_nb)
    graded.cells = [c for c in graded.cells if check_id(c) not in hidden_ids]
    for ex in exercises:
        cells = [instructor_nb.cells[i] for i in hidden_check_cells(instructor_nb, [ex])]
        if not cells:
            continue
        own = [i for i, c in enumerate(graded.cells)
               if exercise_of_check(check_id(c)) == ex.id or f"exercise-{ex.id}" in cell_tags(c)]
        at = max(own) + 1 if own else len(graded.cells)
        graded.cells[at:at] = [nbformat.v4.new_code_cell(c.source, metadata=copy.deepcopy(c.metadata)) for c in cells]
    for index, cell in enumerate(graded.cells):
        cid = check_id(cell)
        if cid is not None:
            if cid in reference:
                ref = reference[cid]
                graded.cells[index] = cell = nbformat.v4.new_code_cell(ref.source, metadata=copy.deepcopy(ref.metadata))
            else:  # a tag the instructor never wrote: not a check
                cell.metadata["tags"] = [t for t in cell_tags(cell) if not CHECK_TAG.match(t)]
        cell.metadata["workbook_index"] = index
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return graded


def run_nbval(notebook: Path, workdir: Path, report: Path, cell_timeout: int, total_timeout: int) -> tuple[str, str]:
    """Run pytest+nbval on `notebook` (in `workdir`), appending one JSON row per cell to `report`
    (tools.nbval_report); returns (how it ended, its output tail). Kills the whole tree on timeout.

    pytest loads nbval and the reporter only: plugins installed in the environment are not autoloaded, since one
    that reorders tests (pytest-randomly) would run the notebook's cells out of order."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "nbval.plugin", "-p", "no:cacheprovider", "-p", "tools.nbval_report",
           "--color=no", "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={cell_timeout}", "-o", "addopts=",
           "--rootdir", str(workdir), notebook.name]
    scratch = workdir / "tmp"                            # the run's temporary files (and its workers') stay in
    scratch.mkdir(exist_ok=True)                         # workdir: nbval kills the kernel, so no cleanup runs
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", WORKBOOK_REPORT=str(report), PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MPLBACKEND="Agg", TQDM_DISABLE="1", TMPDIR=str(scratch))
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=total_timeout)
        return ("finished", out[-4000:])
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)                              # pytest and the kernel it started (in its own session)
        out, _ = proc.communicate(timeout=30)
        return (f"stopped after the overall limit of {total_timeout} s", out[-4000:])
    finally:
        kill_tree(proc.pid)


def grade(submission: Path, instructor_dir: Path, out_dir: Path, cell_timeout: int = 120, total_timeout: int = 1800,
          parameters: dict | None = None) -> dict:
    """Grade one submission; always writes OUT/<name>.json and OUT/<name>.xml and returns the report.
    `parameters` override the notebook's parameters cell (as papermill -p does), e.g. smaller sizes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        submission_nb = read(submission)
    except Exception as err:
        submission_nb, load_error = None, f"not a readable notebook: {type(err).__name__}: {err}"
    else:
        load_error = None
    report = {"notebook": submission.name, "instructor": None, "score": 0, "total": 0, "checks": [], "errors": [], "run": "",
              "hidden": {"passed": 0, "total": 0}}
    try:
        instructor_path = instructor_for(submission, submission_nb, instructor_dir)
    except LookupError as err:
        report["run"] = str(err)
        return _write(report, out_dir, submission, time.perf_counter() - start)
    instructor_nb = read(instructor_path)
    report["instructor"] = instructor_path.name
    instructor_exercises = find_exercises(instructor_nb)
    expected = [cid for ex in instructor_exercises for cid in ex.checks]
    hidden = {cid for ex in instructor_exercises for cid in ex.hidden}
    results: dict[str, list[dict]] = {}
    if load_error:
        report["run"] = load_error
    else:
        graded = graded_copy(with_parameters(submission_nb, parameters), instructor_nb)
        present = {cid: [i for i, c in enumerate(graded.cells) if check_id(c) == cid] for cid in expected}
        workdir = Path(tempfile.mkdtemp(prefix="grade-"))
        private = Path(tempfile.mkdtemp(prefix="grade-rows-"))   # outside the kernel's working folder
        try:
            nb_path = workdir / "submission.ipynb"
            nbformat.write(graded, str(nb_path))
            rows_path = private / "cells.jsonl"
            rows_path.touch()
            report["run"], tail = run_nbval(nb_path, workdir, rows_path, cell_timeout, total_timeout)
            rows = [json.loads(l) for l in rows_path.read_text().splitlines() if l.strip()]
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(private, ignore_errors=True)
        by_cell = {r["cell"]: r for r in rows}
        report["errors"] = [{"cell": r["cell"], "message": r["message"][-600:]} for r in rows if r["outcome"] == "failed" and not any(CHECK_TAG.match(t) for t in r["tags"])]
        if not rows:
            report["run"] += f"; no cell ran. Output:\n{tail}"
        for cid in expected:
            results[cid] = [by_cell.get(i, {"outcome": "not run", "message": f"cell {i} never ran ({report['run'].splitlines()[0]}): kernel died or time ran out before it"}) for i in present[cid]]
    for cid in expected:
        cells = results.get(cid, [])
        if not cells:
            passed, message = False, "check cell missing from the submission" if not load_error else load_error
        else:
            passed = all(c["outcome"] == "passed" for c in cells)
            message = "" if passed else next(c["message"] for c in cells if c["outcome"] != "passed")
        if cid in hidden:                                 # its code and messages stay the instructor's
            message = "" if passed else f"a hidden check failed ({_exception_type(message)})"
        report["checks"].append({"id": cid, "passed": passed, "message": _last_lines(message), "hidden": cid in hidden})
    report["total"] = len(expected)
    report["score"] = sum(c["passed"] for c in report["checks"])
    report["hidden"] = {"passed": sum(c["passed"] for c in report["checks"] if c["hidden"]), "total": len(hidden)}
    return _write(report, out_dir, submission, time.perf_counter() - start)


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
