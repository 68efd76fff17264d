"""Run a torchrun worker script and record how it fails: `python -m course_utils.worker_entry script.py args...`.

`course_utils.distributed.launch` starts every worker through this module: on Linux torchrun forks it from its
own process and runs this file (`torchrun --run-path --start-method=fork .../worker_entry.py script.py args`);
elsewhere it is its own program (`torchrun --module course_utils.worker_entry script.py args`). It runs the
script exactly as `python script.py` would (its folder first on sys.path, `__name__ == "__main__"`), and when the
script raises,
it writes what was raised, by which rank and when (wall clock, nanoseconds) to `$WORKBOOK_RESULTS_DIR`
before the exception goes on as usual. The launcher orders these records by time to name the root cause: the
exception raised first by a worker's own code, not the first line that reached a shared output stream.
It also hands the exception to torchrun's own error file (`TORCHELASTIC_ERROR_FILE`), as `@record` does, so
torchrun's summary shows the traceback.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

# Absolute, not relative: torchrun's --run-path executes this file by its path, outside its package.
from course_utils import distributed
from course_utils.distributed import RESULTS_ENV, WorkerFinished, write_json_atomically


def error_record(err: BaseException, script: str) -> dict:
    """What a failed worker writes: its identity, the time, and the exception (type, message, traceback from the
    script's first frame on)."""
    frames = traceback.extract_tb(err.__traceback__)
    start = next((i for i, f in enumerate(frames) if os.path.abspath(f.filename) == script), 0)
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[start:]),
             *traceback.format_exception_only(type(err), err)]
    dist = sys.modules.get("torch.distributed")
    dist_error = getattr(dist, "DistError", None) if dist is not None else None
    kind = type(err)
    return {
        "rank": int(os.environ.get("RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "node": int(os.environ.get("GROUP_RANK", "0")),
        "attempt": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        "pid": os.getpid(),
        "time_ns": time.time_ns(),
        "type": kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}",
        "message": str(err),
        "dist_error": bool(dist_error is not None and isinstance(err, dist_error)),
        "traceback": "".join(lines),
    }


def _save(record: dict) -> None:
    folder = os.environ.get(RESULTS_ENV)
    if folder:
        write_json_atomically(Path(folder) / f"error-rank{record['rank']}-attempt{record['attempt']}.json", record)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.exit("usage: python -m course_utils.worker_entry script.py [args...]")
    script = os.path.abspath(argv[0])
    if not os.path.isfile(script):
        sys.exit(f"worker script {script} does not exist")
    forked = multiprocessing.parent_process() is not None
    if forked:
        _as_a_program()
    sys.argv = [script, *argv[1:]]
    if getattr(sys.flags, "safe_path", False):               # forked from torchrun's `python -P` process
        sys.path.insert(0, os.path.dirname(script))          # (its sys.path[0] is the standard library's zip)
    else:
        sys.path[0] = os.path.dirname(script)                # as `python script.py` does
    try:
        runpy.run_path(script, run_name="__main__")
    except WorkerFinished:                                   # finish_worker in a forked worker: done
        return
    except SystemExit as err:
        if err.code not in (None, 0):
            _record(err, script, forked)
        raise
    except BaseException as err:
        _record(err, script, forked)
        raise


def _as_a_program() -> None:
    """In a worker torchrun forked: undo what the fork inherited from torchrun's process, so that the worker
    behaves as a freshly started `python -u script.py`. Signals get their default actions back (torchrun's
    handlers would turn its SIGTERM into an exception in the worker), output is line-buffered as with -u, and
    finish_worker returns here instead of calling os._exit. Temporary files go where $TMPDIR says again (the
    torchrun process puts its own in the launch's results folder)."""
    tempfile.tempdir = None
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    distributed._FORKED_WORKER = True


def _record(err: BaseException, script: str, forked: bool = False) -> None:
    try:
        record = error_record(err, script)
        _save(record)
        if os.environ.get("TORCHELASTIC_ERROR_FILE") and not forked:    # a forked worker: torchrun's own @record
            from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

            ErrorHandler().record_exception(err)
    except Exception as failure:                            # recording must never hide the worker's own error
        print(f"course_utils.worker_entry: could not record the error ({failure!r})", file=sys.stderr)


if __name__ == "__main__":
    main()
