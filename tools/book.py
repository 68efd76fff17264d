"""`make book`: the executed instructor edition as a static HTML site (Jupyter Book), one page per notebook.

    python -m tools.book [--executed build/executed] [--out build/book]

Reads the notebooks `make run` executed (it never runs them: the book shows that run's own numbers and plots),
adds a contents page listing each notebook with its one-line summary, marks every exercise (an admonition before
the exercise cell and before its checks), leaves out what is not for readers (hidden checks, the plausible wrong
answers kept for the teeth probe, the parameters cell's tag noise stays), and builds the HTML with Jupyter Book
(Sphinx) without executing anything. The site is `OUT/_build/html/index.html`.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .exercises import CHECK_TAG, EXERCISE_TAG, HIDDEN_TAG
from .notebooks import NOTEBOOK_DIR, ROOT, cell_tags, find_notebooks, read, title_of
from .readme import repository_url


class BookError(RuntimeError):
    pass


def executed_notebooks(executed: Path) -> list[tuple[Path, nbformat.NotebookNode]]:
    """(path, notebook) of the executed copy of every notebook in notebooks/; a clear error when one is missing or
    was not run."""
    if not executed.is_dir():
        raise BookError(f"{executed} does not exist: run `make run` first (the book shows its outputs)")
    found, missing, unrun = [], [], []
    for source in find_notebooks(NOTEBOOK_DIR):
        path = executed / source.name
        if not path.is_file():
            missing.append(source.name)
            continue
        nb = read(path)
        if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            unrun.append(source.name)
        found.append((path, nb))
    if missing or unrun:
        raise BookError(f"in {executed}: " + "; ".join(filter(None, [
            f"missing {', '.join(missing)}" if missing else "", f"never executed (no outputs) {', '.join(unrun)}" if unrun else ""]))
            + " — run `make run` first")
    return found


def _admonition(title: str, text: str, kind: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(f":::{{admonition}} {title}\n:class: {kind}\n{text}\n:::")


def book_page(nb) -> nbformat.NotebookNode:
    """A notebook as the book shows it: exercises and their checks marked; hidden checks and wrong answers out."""
    page = copy.deepcopy(nb)
    cells, after_check = [], False
    for cell in page.cells:
        tags = cell_tags(cell)
        if cell.cell_type == "raw" or HIDDEN_TAG in tags:
            continue                                         # the teeth probe's wrong answers; hidden checks
        exercise = next((m.group(1) for t in tags if (m := EXERCISE_TAG.match(t))), None)
        check = next((m.group(2) for t in tags if (m := CHECK_TAG.match(t))), None)
        if exercise:
            cells.append(_admonition(f"Exercise {exercise}", "The cell below is the exercise, with the instructor's "
                                     "solution; in the student edition its solution lines are replaced by a stub to "
                                     "fill in.", "tip"))
        elif check and not after_check:                      # the first of an exercise's checks
            cells.append(_admonition(f"Check of exercise {check}", "The cells below check the exercise; in this run "
                                     "the solution passed them.", "note"))
        after_check = bool(check)
        cells.append(cell)
    first_code = next((c for c in cells if c.cell_type == "code"), None)
    if first_code is not None:                               # the install block: folded (one click shows it)
        first_code.metadata["tags"] = [*cell_tags(first_code), "hide-input"]
    page.cells = cells
    return page


def write_source(executed: Path, src: Path) -> list[str]:
    """The Jupyter Book source folder: _config.yml, _toc.yml, the contents page and the marked notebooks."""
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    pages, rows = [], []
    for path, nb in executed_notebooks(executed):
        summary = (read(NOTEBOOK_DIR / path.name).metadata.get("workbook") or {}).get("summary", "")
        (src / path.name).write_text(nbformat.writes(book_page(nb)) + "\n")
        pages.append(path.stem)
        rows.append(f"| [{title_of(nb)}]({path.stem}.ipynb) | {summary} |")
    (src / "index.md").write_text(
        "# scaleml-workbook: the executed labs\n\n"
        "The labs of a course on the principles of large-scale machine learning systems, executed on one machine by\n"
        "`make run`: every number and plot on these pages comes from that run. Each lab's exercises are marked, shown\n"
        "with the instructor's solution and the checks it passed.\n\n"
        "| lab | what it builds and measures |\n|---|---|\n" + "\n".join(rows) + "\n")
    (src / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n" + "".join(f"- file: {p}\n" for p in pages))
    (src / "_config.yml").write_text(
        "title: scaleml-workbook\nauthor: the scaleml-workbook authors\nonly_build_toc_files: true\n"
        "execute:\n  execute_notebooks: 'off'\n"
        f"repository:\n  url: {repository_url()}\n  branch: main\n"
        "html:\n  use_repository_button: true\n"
        "sphinx:\n  config:\n    html_show_copyright: false\n    myst_heading_anchors: 3\n"
        "parse:\n  myst_enable_extensions:\n    - dollarmath\n    - colon_fence\n")
    return pages


def build(executed: Path, out: Path) -> Path:
    """Write the source and build the HTML; returns the site's folder (index.html in it)."""
    src = out / "src"
    write_source(executed, src)
    html = out / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src), "--path-output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not (html / "index.html").is_file():
        raise BookError(f"jupyter-book failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line]
    if warnings:
        print(f"{len(warnings)} warning(s) from Sphinx, e.g.: " + "\n".join(warnings[:5]))
    return html


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, default=ROOT / "build" / "executed")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    args = parser.parse_args(argv)
    try:
        html = build(args.executed, args.out)
    except BookError as err:
        print(f"make book: {err}", file=sys.stderr)
        return 1
    print(f"the book: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
