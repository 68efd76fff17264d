"""Run one notebook under pytest+nbval (the notebook tests use it), one JSON row per cell into a report file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from course_utils.processes import kill_tree

from .notebooks import ROOT


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
