"""Prove that every exercise's checks have teeth, in one kernel per notebook.

Runs the instructor notebook top to bottom; right after an exercise's last check cell it re-runs the span from the
exercise cell to that check with the solution region replaced (1) by the student stub, which must fail every
check, and (2) by each `wrong-...` raw cell, which must fail at least one check; then it re-runs the span with the
solution, which must pass every check again, before going on.
"""
from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .exercises import Exercise, find_exercises, replace_solutions, stub_lines, wrong_answer_source
from .notebooks import read, with_parameters


@dataclass
class Variant:
    name: str                      # "solution", "stub" or the wrong answer's first comment line
    failed: dict[str, bool]        # check id -> did any of its cells raise


@dataclass
class ExerciseTeeth:
    id: str
    variants: list[Variant] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        for v in self.variants:
            failed = [c for c, f in v.failed.items() if f]
            if v.name in ("solution", "solution (restored)") and failed:
                out.append(f"{self.id}: with the {v.name} these checks fail: {failed}")
            elif v.name == "stub" and len(failed) != len(v.failed):
                out.append(f"{self.id}: with the stub these checks still pass: {[c for c, f in v.failed.items() if not f]}")
            elif v.name.startswith("wrong") and not failed:
                out.append(f"{self.id}: the wrong answer '{v.name}' passes every check")
        return out


def _errored(cell) -> bool:
    return any(o.get("output_type") == "error" for o in cell.get("outputs", []))


def _error_text(cell) -> str:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return f"{o.get('ename')}: {o.get('evalue')}"
    return ""


def _run_span(client, nb, ex: Exercise, exercise_source: str) -> dict[str, bool]:
    failed = {cid: False for cid in ex.checks}
    owner = {i: cid for cid, cells in ex.checks.items() for i in cells}
    for index in range(ex.cell, ex.last_check + 1):
        cell = copy.deepcopy(nb.cells[index])
        if cell.cell_type != "code":
            continue
        if index == ex.cell:
            cell.source = exercise_source
        client.execute_cell(cell, index)
        if index in owner and _errored(cell):
            failed[owner[index]] = True
    return failed


def probe(path: Path, cell_timeout: int = 600, parameters: dict | None = None) -> tuple[list[ExerciseTeeth], list[str]]:
    """Run the notebook and every exercise variant; returns the per-exercise results and errors of ordinary cells.
    `parameters` override the parameters cell (smaller sizes: the exercises' checks do not depend on them)."""
    nb = with_parameters(read(path), parameters)
    exercises = find_exercises(nb)
    after = {ex.last_check: ex for ex in exercises}
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    results, cell_errors = [], []
    check_cells = {i for ex in exercises for cells in ex.checks.values() for i in cells}
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, index)
            if _errored(cell) and index not in check_cells:
                cell_errors.append(f"cell {index}: {_error_text(cell)}")
            ex = after.get(index)
            if ex is None:
                continue
            teeth = ExerciseTeeth(ex.id)
            original = nb.cells[ex.cell].source
            teeth.variants.append(Variant("solution", {cid: any(_errored(nb.cells[i]) for i in cells) for cid, cells in ex.checks.items()}))
            stub = replace_solutions(original, lambda indent: stub_lines(ex.id))
            teeth.variants.append(Variant("stub", _run_span(client, nb, ex, stub)))
            for w in ex.wrong:
                why = nb.cells[w].source.splitlines()[0].lstrip("# ").strip() or f"cell {w}"
                teeth.variants.append(Variant(f"wrong: {why}", _run_span(client, nb, ex, wrong_answer_source(nb, ex, w))))
            teeth.variants.append(Variant("solution (restored)", _run_span(client, nb, ex, original)))
            results.append(teeth)
    return results, cell_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+")
    args = parser.parse_args(argv)
    bad = 0
    for p in args.notebooks:
        results, errors = probe(Path(p))
        for t in results:
            for v in t.variants:
                print(f"{Path(p).name} {t.id:<8} {v.name:<50} failed checks: {[c for c, f in v.failed.items() if f]}")
            for problem in t.problems():
                print("PROBLEM", problem)
                bad += 1
        for e in errors:
            print("ERROR", e)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
