"""`make run`: execute every notebook top to bottom with papermill, then print a table of wall time, the notebook's
time budget (metadata.workbook.budget_seconds) and status, flagging any notebook over its budget or above 75% of it.

Writes executed copies to --out and a JSON summary: [{"notebook", "seconds", "budget", "status"}...]. Exits 1 if
any notebook failed, naming the cell that failed. A notebook over budget is flagged, not failed: timings depend
on the machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import papermill as pm

from .notebooks import BUDGET_TARGET, budget_flag, budget_seconds, cell_tags, find_notebooks, read


def failing_cell(executed: Path) -> str:
    """Describe the first cell whose output is an error, from an executed notebook."""
    nb = read(executed)
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                tags = [t for t in cell_tags(cell) if t != "injected-parameters"]
                first = next((l for l in cell.source.splitlines() if l.strip()), "")
                where = f"cell {index}" + (f" [{', '.join(tags)}]" if tags else "") + f" ({first[:60]!r})"
                return f"{where}: {out.get('ename')}: {out.get('evalue', '')[:300]}"
    return "no cell recorded an error (kernel died or timed out?)"


def run_one(path: Path, out_dir: Path, progress: bool, timeout: int) -> dict:
    out_path = out_dir / path.name
    start = time.perf_counter()
    status, detail = "ok", ""
    try:
        pm.execute_notebook(
            str(path), str(out_path), cwd=str(path.parent), kernel_name="python3",
            progress_bar=progress, execution_timeout=timeout,
        )
    except Exception as err:  # PapermillExecutionError, a dead kernel, a timeout: all are a failed notebook
        status = "error"
        detail = failing_cell(out_path) if out_path.exists() else f"{type(err).__name__}: {err}"
    return {"notebook": path.name, "seconds": round(time.perf_counter() - start, 2), "budget": budget_seconds(read(path)),
            "status": status, "detail": detail}


def print_table(rows: list[dict]) -> None:
    width = max(len(r["notebook"]) for r in rows)
    print(f"\n{'notebook':<{width}}  {'seconds':>8}  {'budget':>6}  {'used':>5}  status")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 6}  {'-' * 5}  ------")
    for r in rows:
        flag = budget_flag(r["seconds"], r["budget"])
        print(f"{r['notebook']:<{width}}  {r['seconds']:>8.1f}  {r['budget']:>6.0f}  {r['seconds'] / r['budget']:>5.0%}  "
              f"{r['status']}" + (f"  <- {flag}" if flag else ""))
    total, budget = sum(r["seconds"] for r in rows), sum(r["budget"] for r in rows)
    print(f"{'total':<{width}}  {total:>8.1f}  {budget:>6.0f}  {total / budget:>5.0%}")
    print(f"(target: every notebook at most {BUDGET_TARGET:.0%} of its budget, on a 2-core CPU)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", nargs="?", default="notebooks", help="a notebook or a folder of notebooks")
    parser.add_argument("--out", default="build/executed", help="folder for the executed notebooks")
    parser.add_argument("--summary", default="build/run-summary.json", help="where to write the JSON summary")
    parser.add_argument("--cell-timeout", type=int, default=900, help="seconds one cell may run")
    parser.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    args = parser.parse_args(argv)

    notebooks = find_notebooks(args.target)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {path.name}", flush=True)
        row = run_one(path, out_dir, progress=not args.no_progress, timeout=args.cell_timeout)
        print(f"    {row['status']} in {row['seconds']:.1f} s" + (f": {row['detail']}" if row["detail"] else ""), flush=True)
        rows.append(row)
    print_table(rows)
    summary = Path(args.summary)
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps([{k: r[k] for k in ("notebook", "seconds", "budget", "status")} for r in rows], indent=2) + "\n")
    print(f"summary written to {summary}; executed notebooks in {out_dir}/")
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        print(f"FAILED {r['notebook']}: {r['detail']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
