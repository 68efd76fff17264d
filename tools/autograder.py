"""Gradescope: build the autograder zip for one notebook, and run it inside Gradescope's container.

    python -m tools.autograder build NOTEBOOK.ipynb [--instructor DIR] [--out ZIP] [-p NAME VALUE ...]
    python -m tools.autograder run [--root /autograder]          (what the zip's run_autograder calls)

The zip holds `setup.sh` (installs Python, a virtual environment and the pinned requirements, torch from the CPU
wheel index), `run_autograder`, `autograder.json` (the notebook it grades and its settings) and the grader with
what it needs: course_utils, data, tools and the instructor's notebook. `run` grades the notebook it finds in
/autograder/submission/ with the same grader as `make grade` (sandbox included, or as much of it as the container
allows: the report names what was off) and writes /autograder/results/results.json in Gradescope's format: one
test per check (score, max_score, output), hidden checks shown only once the grades are published.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

from .grade import ERRORS_AFTER_HIDDEN, display_name, empty_report, grade, shown_errors
from .notebooks import NOTEBOOK_DIR, ROOT, read

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, in its Ubuntu image, with the zip unpacked in /autograder/source.
set -euo pipefail
apt-get update -qq
apt-get install -y -qq python3 python3-venv python3-pip > /dev/null
python3 -m venv /autograder/venv
cd /autograder/source
# torch from the CPU wheel index: PyPI's default build carries several GB of CUDA libraries
/autograder/venv/bin/pip install -q --disable-pip-version-check --index-url https://download.pytorch.org/whl/cpu \\
    "$(grep -E '^torch==' requirements.txt)"
/autograder/venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
/autograder/venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
# only root (the grader) may read the instructor's notebook; the submission's kernel runs as a user of its own
chmod -R go-rwx /autograder/source/notebooks
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission. AUTOGRADER_ROOT and AUTOGRADER_PYTHON let a test run it elsewhere.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PY="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
cd "$ROOT/source" && exec "$PY" -m tools.autograder run --root "$ROOT"
"""

PACKED = ("course_utils", "data", "tools", "requirements.txt", "pyproject.toml", "README.md")


def build(notebook: str, instructor_dir: Path, out: Path, parameters: dict | None = None,
          cell_timeout: int = 300, total_timeout: int = 2400) -> Path:
    """Write the autograder zip for `notebook` (a file name in `instructor_dir`) to `out`."""
    source = instructor_dir / notebook
    if not source.is_file():
        raise FileNotFoundError(f"no instructor notebook {notebook} in {instructor_dir}")
    read(source)                                           # a broken notebook fails here, not on Gradescope
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {"notebook": notebook, "parameters": parameters or {}, "cell_timeout": cell_timeout,
              "total_timeout": total_timeout}

    def add(zf: zipfile.ZipFile, path: Path, name: str) -> None:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and "__pycache__" not in child.parts and not child.name.endswith(".pyc"):
                    zf.write(child, f"{name}/{child.relative_to(path).as_posix()}")
        else:
            zf.write(path, name)

    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16     # executable once unpacked
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
        zf.writestr("autograder.json", json.dumps(config, indent=2) + "\n")
        for name in PACKED:
            if (ROOT / name).exists():
                add(zf, ROOT / name, name)
        zf.write(source, f"notebooks/{notebook}")
    return out


def results_json(report: dict, notebook: str) -> dict:
    """Gradescope's results: one test per check, 1 point each; hidden ones visible after publication. No top-level
    score (Gradescope sums the tests, hiding what is not yet visible), except when there is no test."""
    tests = []
    for number, check in enumerate(report["checks"], 1):
        tests.append({
            "name": f"{check['id']}" + (" (hidden)" if check["hidden"] else ""),
            "number": str(number),
            "score": 1.0 if check["passed"] else 0.0,
            "max_score": 1.0,
            "status": "passed" if check["passed"] else "failed",
            "output": ("failed (the message is withheld: this check ran after a hidden check)" if check.get("after_hidden")
                       else check["message"]) if not check["passed"] else "passed",
            "visibility": "after_published" if check["hidden"] else "visible",
        })
    visible = [c for c in report["checks"] if not c["hidden"]]
    hidden = len(report["checks"]) - len(visible)
    # what students read before publication counts the visible checks only: a total that included the hidden ones
    # would tell them how those went
    lines = [f"{notebook}: {sum(c['passed'] for c in visible)} of {len(visible)} visible checks passed"
             + (f"; {hidden} hidden check{'s' if hidden != 1 else ''}, shown when grades are published." if hidden else ".")]
    if report["run"] and report["run"] != "finished":
        lines.append(f"The run did not finish normally: {report['run'].splitlines()[0]}")
    lines += list(report.get("notes", []))
    lines += [f"The submission has no cell tagged exercise-{ex}; its stub was graded." for ex in report.get("missing_exercises", [])]
    lines += [f"Error in cell {e['cell']} (not a check): " + (e['message'].strip().splitlines()[-1] if e['message'].strip() else '')
              for e in shown_errors(report)[:10]]
    if hidden:
        lines.append(ERRORS_AFTER_HIDDEN)
    off = (report.get("protections") or {}).get("off") or {}
    if off:
        lines.append("Grading ran with these protections off: " + "; ".join(off))
    results = {"output": "\n".join(lines), "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}
    if not tests:                  # Gradescope totals the tests' scores itself; with none, the total must be given
        results["score"] = 0.0
    return results


def run(root: Path) -> dict:
    """Grade the submission in ROOT/submission with ROOT/source, write ROOT/results/results.json."""
    source, results = root / "source", root / "results"
    config = json.loads((source / "autograder.json").read_text())
    notebook = config["notebook"]
    results.mkdir(parents=True, exist_ok=True)
    candidates = []                       # regular files only, found without following links
    for folder, dirs, files in os.walk(root / "submission", followlinks=False):
        dirs[:] = [d for d in dirs if d != ".ipynb_checkpoints"]
        candidates += [Path(folder) / f for f in files
                       if f.endswith(".ipynb") and (Path(folder) / f).is_file() and not (Path(folder) / f).is_symlink()]
    candidates.sort()
    exact = [p for p in candidates if p.name == notebook]
    work = Path(tempfile.mkdtemp(prefix="autograder-"))
    try:
        if not candidates:
            report = empty_report("(none)", f"no notebook (.ipynb) in the submission: upload {notebook}")
        else:
            chosen = (exact or candidates)[0]
            copy = work / "submission" / chosen.name           # graded from a copy the grader owns
            copy.parent.mkdir()
            shutil.copyfile(chosen, copy)
            try:
                report = grade(copy, source / "notebooks", work / "reports", config["cell_timeout"],
                               config["total_timeout"], config.get("parameters") or None, expected=notebook)
            except Exception as err:                   # noqa: BLE001: Gradescope still gets a results.json
                report = empty_report(display_name(chosen), f"the grader failed: {type(err).__name__}: {err}")
            if len(candidates) > 1:                    # a note, not the run's outcome (which it made "not normal")
                report["notes"] = [f"Graded {display_name(chosen)} of the {len(candidates)} notebooks in the submission."]
        payload = results_json(report, notebook)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (results / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the autograder zip for one notebook")
    b.add_argument("notebook", help="file name of the instructor notebook, e.g. 01_sgd.ipynb")
    b.add_argument("--instructor", default=str(NOTEBOOK_DIR))
    b.add_argument("--out", default=None, help="default: build/autograder/<notebook>.zip")
    b.add_argument("--cell-timeout", type=int, default=300)
    b.add_argument("--total-timeout", type=int, default=2400)
    b.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    r = sub.add_parser("run", help="grade /autograder/submission (inside Gradescope)")
    r.add_argument("--root", default="/autograder")
    args = parser.parse_args(argv)
    if args.command == "build":
        out = Path(args.out or f"build/autograder/{Path(args.notebook).stem}.zip")
        parameters = {name: ast.literal_eval(value) for name, value in args.parameter}
        build(Path(args.notebook).name, Path(args.instructor), out, parameters, args.cell_timeout, args.total_timeout)
        print(f"wrote {out}: upload it as the autograder of the {args.notebook} assignment on Gradescope")
    else:
        payload = run(Path(args.root))
        print(payload["output"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
