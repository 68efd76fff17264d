"""Write, once, the bytecode of the modules that sandboxed kernels and workers import: `python -m tools.bytecode`.

`make setup` installs without compiling (pip's --no-compile: compiling everything took about 50 s of one core) and
lets Python write a module's bytecode the first time a process imports it. A grading sandbox sees the environment
read-only, so a module that no process outside a sandbox has imported yet is compiled from source, in memory, by
every sandboxed kernel, zygote and worker that imports it, and never written. On a fresh setup that was 2 s of CPU
in each grading of a toy whose check launches workers (6.1 s instead of 4.2). `make grade` runs this before it
grades: it imports, in one process outside any sandbox, what a grading's processes import (the kernel, the
launcher's zygote, what training workers load lazily, and the imports of every notebook), which writes their
bytecode. A module that fails to import is named and skipped (the grading then meets the error itself).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import time
from pathlib import Path

from .notebooks import NOTEBOOK_DIR, find_notebooks, read

KERNEL = ("ipykernel_launcher", "ipykernel.kernelapp", "ipykernel.ipkernel", "IPython", "jupyter_client")
COURSE_UTILS = ("course_utils", "course_utils.checks", "course_utils.distributed",
                "course_utils.worker_entry", "course_utils.torchrun_driver", "course_utils.zygote")


def notebook_imports(notebooks: list[Path]) -> list[str]:
    """The absolute imports of every code cell of the notebooks whose top-level package is installed, sorted. That
    includes the imports of the files a cell writes (%%writefile: 05's worker scripts, which workers import), but
    not the modules a notebook writes itself (not installed)."""
    from .colab import notebook_code

    names = set()
    for path in notebooks:
        for node in ast.walk(ast.parse(notebook_code(read(path)))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return sorted(n for n in names if importlib.util.find_spec(n.split(".")[0]) is not None)


def modules(notebooks: list[Path] | None = None) -> list[str]:
    from course_utils import zygote
    from course_utils.parallel import LAZY_TORCH_IMPORTS
    from course_utils.torchrun_driver import LAZY_IMPORT_USERS

    torch_lazy = [m for m in LAZY_IMPORT_USERS if m.startswith("torch.") and m != "torch.compile"]
    found = notebook_imports(find_notebooks(NOTEBOOK_DIR) if notebooks is None else notebooks)
    return list(dict.fromkeys([*KERNEL, *zygote.PRELOAD, *LAZY_TORCH_IMPORTS, *torch_lazy, *COURSE_UTILS, *found]))


def main(argv: list[str] | None = None) -> int:
    """Import the modules named on the command line (1 if one could not be imported), or else modules() (each
    that fails is named, and 0: grading goes on, and meets the error where a notebook needs the module)."""
    if sys.flags.dont_write_bytecode:
        print("tools.bytecode: this Python does not write bytecode (PYTHONDONTWRITEBYTECODE or -B): nothing to do")
        return 0
    start, failed = time.perf_counter(), []
    named = list(sys.argv[1:] if argv is None else argv)
    names = named or modules()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:                           # noqa: BLE001 (named, and left to the grading)
            failed.append(f"{name} ({type(err).__name__}: {err})")
    print(f"tools.bytecode: imported {len(names) - len(failed)} modules and what they import, "
          f"{len(sys.modules)} in all, in {time.perf_counter() - start:.1f} s"
          + (f"; could not import: {', '.join(failed)}" if failed else ""))
    return 1 if failed and named else 0


if __name__ == "__main__":
    sys.exit(main())
