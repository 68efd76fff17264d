"""Prove that every exercise's checks have teeth, in the same run that shows the notebook runs green.

`with_teeth(nb, rows_path)` returns the notebook with a probe cell inserted right after each exercise cell. Each
probe cell runs, in the same kernel, the span from the exercise cell to its last check with the solution region
replaced (1) by the student stub, which must fail every check, and (2) by each `wrong-...` raw cell, which must run
without error in its own cell and fail at least one check by an assertion (AssertionError, which the check helpers
raise; a NameError or TypeError inside a check is a crash, not a catch). Then it runs the exercise cell as written
once more, so that the notebook's own cells after it (the rest of the span, the checks included) run on the
solution as in a plain run: they are what shows that the solution passes every check. The probe also puts back the
global random states and those of the generators the notebook's names hold, which a variant, or the checks the
probe runs, may have drawn from. Each probe cell appends one JSON row per variant to `rows_path`: which checks
failed, and how (exception type and message).

So a single top-to-bottom run (nbval in `make test`, nbclient in `python -m tools.teeth`) holds both the
notebook's own claims at its default sizes and its exercises' teeth, instead of a second run of the notebook.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .exercises import Exercise, find_exercises, replace_solutions, stub_lines, wrong_answer_source
from .notebooks import ipc_kernel_manager, read, with_parameters

PROBE_TAG = "teeth-probe"

# Defined in the kernel by the first probe cell. Runs each cell of a span through IPython (so %%writefile and other
# magics work as in the notebook), its output captured, and records which check ids failed and with what.
_RUNNER = '''\
def _workbook_run(source):
    """Run one cell's source through IPython (magics work as in the notebook), its output captured and its traceback
    kept from the front end (the probe's expected failures are not the notebook's errors); return its error or None."""
    from IPython import get_ipython
    from IPython.utils.capture import capture_output
    shell = get_ipython()
    shown = shell._showtraceback
    shell._showtraceback = lambda *args, **kwargs: None
    try:
        with capture_output():
            result = shell.run_cell(source, store_history=False)
    finally:
        shell._showtraceback = shown
    return result.error_before_exec or result.error_in_exec


def _workbook_teeth(rows_path, exercise, variant, cells, until_caught=False, until_each_caught=False):
    """Run the (check id or None, source) cells of one variant in this kernel; append its row to rows_path.
    until_caught: stop at the first check that fails by an assertion (a wrong answer is caught; the rest of its
    checks need not run). until_each_caught: the same, except that the checks after the catch still run while one
    of them has not yet caught any of this exercise's wrong answers in this kernel: each is seen catching one."""
    import json
    failed, errors = {}, []
    seen = _workbook_teeth.__dict__.setdefault("seen", {}).setdefault(exercise, set())   # checks that caught one
    for index, (check, source) in enumerate(cells):
        error = _workbook_run(source)
        if check is not None:
            failed[check] = failed.get(check, False) or error is not None
        if error is not None:
            errors.append({"check": check, "type": type(error).__name__, "message": str(error)[-500:],
                           "assertion": isinstance(error, AssertionError)})
            if check is not None and isinstance(error, AssertionError):
                if until_each_caught:
                    seen.add(check)
                if until_caught or (until_each_caught and {c for c, _ in cells[index + 1:] if c} <= seen):
                    break
    with open(rows_path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"exercise": exercise, "variant": variant, "failed": failed, "errors": errors}) + "\\n")


def _workbook_solution(source):
    """Run the exercise cell as the notebook has it again, after the variants: the notebook's cells that follow
    (its checks) then see the solution. A failure here fails the probe cell, with the exercise cell's error."""
    error = _workbook_run(source)
    if error is not None:
        raise RuntimeError(f"the exercise cell, run again after the probe's variants, failed: {error!r}") from error


def _workbook_random_state():
    """The global random states (random, NumPy, torch and its GPUs) and those of the generators the notebook's names
    hold (a `gen = torch.Generator()` that check cells draw from): the probe puts them back when it is done, so that
    neither a variant nor the probe's re-runs of the checks (one per variant) change what later cells compute."""
    import copy, random, sys
    state = {"random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None:
        state["numpy"] = np.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    named = []                               # (how to put it back, its state now)
    for value in list(get_ipython().user_ns.values()):
        if torch is not None and type(value) is torch.Generator:
            named.append((value.set_state, value.get_state()))
        elif np is not None and type(value) is np.random.Generator:
            bits = value.bit_generator
            named.append((lambda saved, bits=bits: setattr(bits, "state", saved), copy.deepcopy(bits.state)))
        elif np is not None and type(value) is np.random.RandomState:
            named.append((value.set_state, value.get_state()))
        elif type(value) is random.Random:
            named.append((value.setstate, value.getstate()))
    state["named"] = named
    return state


def _workbook_restore_random_state(state):
    import random, sys
    random.setstate(state["random"])
    if "numpy" in state:
        sys.modules["numpy"].random.set_state(state["numpy"])
    if "torch" in state:
        sys.modules["torch"].set_rng_state(state["torch"])
    if "cuda" in state:
        sys.modules["torch"].cuda.set_rng_state_all(state["cuda"])
    for put_back, saved in state["named"]:
        put_back(saved)
'''


@dataclass
class Variant:
    name: str                      # "stub" or "wrong: <reason>"
    failed: dict[str, bool]        # check id -> did any of its cells raise
    errors: list[dict] = field(default_factory=list)   # {"check", "type", "message", "assertion"} per raising cell

    @property
    def caught_by(self) -> list[str]:
        """The checks that failed by an assertion (AssertionError, what the check helpers raise): only that
        counts as catching a wrong answer. A NameError or TypeError inside a check is a crash, not a verdict."""
        return sorted({e["check"] for e in self.errors if e["check"] is not None and e.get("assertion")})


@dataclass
class ExerciseTeeth:
    id: str
    variants: list[Variant] = field(default_factory=list)
    every_check: bool = False      # its wrong answers run every check, and every check must catch one of them

    def problems(self) -> list[str]:
        out = []
        names = [v.name for v in self.variants]
        if "stub" not in names:
            out.append(f"{self.id}: the probe did not run every variant (ran {names})")
        for v in self.variants:
            failed = [c for c, f in v.failed.items() if f]
            if v.name == "stub" and len(failed) != len(v.failed):
                out.append(f"{self.id}: with the stub these checks still pass: {[c for c, f in v.failed.items() if not f]}")
            elif v.name.startswith("wrong") and any(e["check"] is None for e in v.errors):
                crash = next(e for e in v.errors if e["check"] is None)
                out.append(f"{self.id}: the wrong answer '{v.name}' fails outside the checks "
                           f"({crash['type']}: {crash['message'][:200]}), so the checks were never tested on it")
            elif v.name.startswith("wrong") and not failed:
                out.append(f"{self.id}: the wrong answer '{v.name}' passes every check")
            elif v.name.startswith("wrong") and not v.caught_by:
                crash = next(e for e in v.errors if e["check"] is not None)
                out.append(f"{self.id}: the wrong answer '{v.name}' makes the checks crash ({crash['type']}: "
                           f"{crash['message'][:200]}) instead of failing one of their assertions")

        wrongs = [v for v in self.variants if v.name.startswith("wrong")]
        if self.every_check and wrongs:
            catching = {c for v in wrongs for c in v.caught_by}
            # every check of the exercise (the stub runs them all), not only those the wrong answers reached
            checks = sorted({c for v in self.variants if v.name == "stub" for c in v.failed}
                            | {c for v in wrongs for c in v.failed})
            for check in checks:
                if check not in catching:
                    out.append(f"{self.id}: its check {check} catches none of the wrong answers (the probe ran it on "
                               f"each of them until it caught one: metadata workbook.teeth_every_check); a check at "
                               f"another world size must be seen catching one")
        return out


def _span(nb, ex: Exercise, exercise_source: str) -> list[tuple[str | None, str]]:
    owner = {i: cid for cid, cells in ex.checks.items() for i in cells}
    cells = []
    for index in range(ex.cell, ex.last_check + 1):
        cell = nb.cells[index]
        if cell.cell_type == "code":
            cells.append((owner.get(index), exercise_source if index == ex.cell else cell.source))
    return cells


def variants_of(nb, ex: Exercise) -> list[tuple[str, str]]:
    """(name, exercise cell source) of each variant the probe runs, in order: the stub, then the wrong answers."""
    original = nb.cells[ex.cell].source
    out = [("stub", replace_solutions(original, lambda indent: stub_lines(ex.id)))]
    for w in ex.wrong:
        why = nb.cells[w].source.splitlines()[0].lstrip("# ").strip() if nb.cells[w].source.strip() else ""
        out.append((f"wrong: {why or f'cell {w}'}", wrong_answer_source(nb, ex, w)))
    return out


def _probe_cell(source: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [PROBE_TAG]
    return cell


def with_teeth(nb, rows_path: str | Path):
    """A copy of `nb` with a probe cell for each exercise right after its exercise cell (see the module doc). The
    notebook's own cells from there to the exercise's last check then run once, on the solution, as in a plain run;
    a probe after the checks would have to run them once more for the solution, to leave the kernel as they do."""
    exercises = find_exercises(nb)
    every_check = set(every_check_exercises(nb))
    after = {ex.cell: ex for ex in exercises}
    out = copy.deepcopy(nb)
    out.cells = []
    runner_defined = False
    for index, cell in enumerate(nb.cells):
        out.cells.append(copy.deepcopy(cell))
        ex = after.get(index)
        if ex is None:
            continue
        mode = "until_each_caught" if ex.id in every_check else "until_caught"
        calls = [f"_workbook_teeth({str(rows_path)!r}, {ex.id!r}, {name!r}, {_span(nb, ex, source)!r}"
                 f"{f', {mode}=True' if name.startswith('wrong') else ''})"
                 for name, source in variants_of(nb, ex)]
        head = "" if runner_defined else _RUNNER + "\n\n"
        runner_defined = True
        out.cells.append(_probe_cell(f"# Teeth probe of {ex.id} (inserted by tools.teeth)\n{head}"
                                     "_workbook_random = _workbook_random_state()\n" + "\n".join(calls)
                                     + f"\n_workbook_solution({cell.source!r})"
                                     + "\n_workbook_restore_random_state(_workbook_random)"))
    return out


def every_check_exercises(nb) -> list[str]:
    """Exercises (metadata workbook.teeth_every_check) whose checks run at several world sizes or settings: each
    check must catch at least one of their wrong answers (a check at another world size that catches nothing is not
    seen to work). The probe runs a wrong answer's checks past its first catch for as long as one of them has not
    caught any wrong answer yet (until_each_caught); once each has, a wrong answer stops at its first catch, as in
    other exercises."""
    ids = (nb.metadata.get("workbook") or {}).get("teeth_every_check", [])
    known = {ex.id for ex in find_exercises(nb)}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"metadata workbook.teeth_every_check names exercises the notebook does not have: {unknown}")
    return list(ids)


def read_rows(nb, rows_path: str | Path) -> list[ExerciseTeeth]:
    """The probe's rows grouped per exercise of `nb` (an exercise whose probe never ran has no variants)."""
    path = Path(rows_path)
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()] if path.exists() else []
    every_check = set(every_check_exercises(nb))
    results = {ex.id: ExerciseTeeth(ex.id, every_check=ex.id in every_check) for ex in find_exercises(nb)}
    for r in rows:
        if r["exercise"] not in results:
            raise ValueError(f"probe row for unknown exercise {r['exercise']!r}")
        results[r["exercise"]].variants.append(Variant(r["variant"], r["failed"], r["errors"]))
    return list(results.values())


def probe(path: Path, cell_timeout: int = 600, parameters: dict | None = None) -> tuple[list[ExerciseTeeth], list[str]]:
    """Run the notebook with its probe cells (nbclient); returns the per-exercise results and the errors of the
    notebook's own cells (a check cell's error: the solution fails that check) and of the probe cells. `parameters`
    override the parameters cell (e.g. its quick sizes)."""
    from nbclient import NotebookClient

    nb = with_parameters(read(path), parameters)
    checks = {i: cid for ex in find_exercises(nb) for cid, cells in ex.checks.items() for i in cells}
    with tempfile.TemporaryDirectory(prefix="teeth-") as tmp:
        rows = Path(tmp) / "teeth.jsonl"
        probed = with_teeth(nb, rows)
        NotebookClient(probed, km=ipc_kernel_manager(tmp), timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        errors = []
        original = 0
        for cell in probed.cells:
            is_probe = PROBE_TAG in cell.metadata.get("tags", [])
            for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
                if o.get("output_type") == "error":
                    where = ("probe cell" if is_probe else f"cell {original} (check {checks[original]}, on the solution)"
                             if original in checks else f"cell {original}")
                    errors.append(f"{where}: {o.get('ename')}: {o.get('evalue')}")
            original += 0 if is_probe else 1
        return read_rows(nb, rows), errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--quick", action="store_true", help="run at the notebook's quick_parameters")
    args = parser.parse_args(argv)
    from .notebooks import quick_parameters

    bad = 0
    for p in args.notebooks:
        results, errors = probe(Path(p), parameters=quick_parameters(read(p)) if args.quick else None)
        for t in results:
            for v in t.variants:
                how = "; ".join(f"{e['check']}: {e['type']}: {e['message'][:80]}" for e in v.errors if e["check"])
                verdict = f"caught by {v.caught_by}" if v.name.startswith("wrong") else \
                    f"failed: {[c for c, f in v.failed.items() if f]}"
                print(f"{Path(p).name} {t.id:<8} {v.name:<50} {verdict} {how}")
            for problem in t.problems():
                print("PROBLEM", problem)
                bad += 1
        for e in errors:
            if args.quick:          # the notebook's own claims are sized for its defaults, not the quick sizes
                print("NOTE (a claim at quick sizes, not a teeth problem)", e.splitlines()[0][:200])
            else:
                print("ERROR", e)
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
