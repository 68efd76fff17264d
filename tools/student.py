"""`make student`: write the student edition of every notebook (solutions stubbed, outputs cleared) to student/, the
folder students open (committed: tests/test_notebooks.py fails when it is out of step with notebooks/)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from .exercises import find_exercises, student_edition
from .notebooks import find_notebooks, read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", nargs="?", default="notebooks")
    parser.add_argument("--out", default="student")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {path.name for path in find_notebooks(args.target)}
    for stale in out.glob("*.ipynb"):                # a notebook renamed or removed in notebooks/ goes here too
        if stale.name not in wanted:
            stale.unlink()
    for path in find_notebooks(args.target):
        nb = read(path)
        n = len(find_exercises(nb))
        nbformat.write(student_edition(nb, path.name), str(out / path.name))
        print(f"{path.name}: {n} exercise(s) stubbed -> {out / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
