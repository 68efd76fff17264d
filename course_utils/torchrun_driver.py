"""torchrun that also writes down how each worker ended: `python -m course_utils.torchrun_driver <torchrun args>`.

It runs torchrun itself (`torch.distributed.run`, same arguments, same output). When workers fail, torchrun
raises `ChildFailedError` holding one `ProcessFailure` per failed rank (exit code, signal, error file); this
driver saves them as JSON to `$WORKBOOK_RESULTS_DIR/failures-<pid>.json` before torchrun reports as usual. A worker
killed by a signal leaves no error file of its own, so this is how the launcher learns its rank and signal.
When torchrun is done, the driver leaves with `os._exit` (after flushing): the interpreter's own shutdown of a
process that ran torchrun's agent took about 0.9 s here, on every launch, and does nothing the launcher needs.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .distributed import RESULTS_ENV, write_json_atomically


def failure_row(rank: int, node: int, local_rank: int, pid: int, exitcode: int, signal: str | None, when: float,
                has_error_file: bool) -> dict:
    """The JSON row the launcher reads for one failed worker (see course_utils.distributed)."""
    return {"rank": int(rank), "node": node, "local_rank": local_rank, "pid": pid, "exitcode": exitcode,
            "signal": signal, "time": when, "has_error_file": has_error_file}


def failure_rows(failures: dict, node: int) -> list[dict]:
    """JSON rows for torchrun's {global rank: ProcessFailure}."""
    return [failure_row(rank, node, f.local_rank, f.pid, f.exitcode, f.signal_name() if f.exitcode < 0 else None,
                        f.timestamp, bool(f.error_file_data.get("message")))
            for rank, f in sorted(failures.items())]


def _watch_forked_workers(rows: list[dict], node: int) -> None:
    """Record the exit of every forked worker that ended badly, in `failure_row`s.

    Workers that torchrun forks (function entry points, what `launch` uses on Linux) are watched by its
    MultiprocessContext, whose ChildFailedError names only the first failure it happened to observe, often a
    peer's "Connection closed" rather than the rank that was killed. Just before torchrun terminates the group,
    this reads each worker's exit status (the forks are this process's children) and keeps the failed ones.
    If a torch version lacks these internals, nothing is recorded and ChildFailedError's own list is used."""
    try:
        from torch.distributed.elastic.multiprocessing.api import MultiprocessContext
        original = MultiprocessContext._close
    except (ImportError, AttributeError):
        return

    def close(self, *args, **kwargs):
        try:
            for local_rank, proc in enumerate(getattr(self._pc, "processes", None) or []):
                code = proc.exitcode
                if code in (None, 0):
                    continue
                env = getattr(self, "envs", {}).get(local_rank, {})
                signal_name = None
                if code < 0:
                    import signal
                    try:
                        signal_name = signal.Signals(-code).name
                    except ValueError:
                        signal_name = f"signal {-code}"
                rows.append(failure_row(int(env.get("RANK", local_rank)), node, local_rank, proc.pid, code,
                                        signal_name, time.time(), False))
        except Exception as err:                      # never let bookkeeping hide the launch's own outcome
            print(f"course_utils.torchrun_driver: could not read the workers' exit status ({err!r})", file=sys.stderr)
        return original(self, *args, **kwargs)

    MultiprocessContext._close = close


PRELOADED_PACKAGES = ("torch", "numpy")


def preload_imports(script: str | Path) -> list[str]:
    """Import, in this process, the torch and numpy modules that a worker script imports at its top level.

    Workers that torchrun forks inherit every module this process has loaded, so a module imported here once is
    ready in all of them; imported in each worker, it costs each its own import time (torch.distributed.optim,
    for ZeroRedundancyOptimizer, took 1.3 s here). Only torch and numpy modules are loaded: the script's own
    modules stay the worker's business (they may do work at import). A module that fails to import is skipped
    here; the worker then meets the error itself. Returns the modules imported."""
    import ast
    import importlib

    try:
        tree = ast.parse(Path(script).read_text(), filename=str(script))
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    loaded = []
    for name in dict.fromkeys(names):
        if name.split(".")[0] in PRELOADED_PACKAGES:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception:
                pass
    return loaded


# Names whose use imports torch._dynamo (LAZY_TORCH_IMPORTS) in the process that uses them, about 1.7 s of CPU here:
# the first step of any torch.optim optimizer, DistributedDataParallel(...), ZeroRedundancyOptimizer, FSDP, DTensor,
# torch.compile. course_utils modules other than the launcher's own may train (course_utils.training, gpt).
LAZY_IMPORT_USERS = ("torch.optim", "torch.nn.parallel", "torch.distributed.optim", "torch.distributed.fsdp",
                     "torch.distributed.tensor", "torch.distributed.algorithms", "torch.distributed.pipelining",
                     "torch._dynamo", "torch.compile", "course_utils", "DistributedDataParallel", "DDP")
LAUNCHER_MODULES = ("course_utils.distributed", "course_utils.worker_entry")


def _names_in(tree) -> set[str]:
    """The dotted names a module's syntax tree mentions: each import (`from torch import optim` gives torch.optim)
    and each chain of attributes on a name (`torch.optim.SGD`), as written."""
    import ast

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute):
            parts, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                names.add(".".join([value.id, *reversed(parts)]))
        elif isinstance(node, ast.Name):
            names.add(node.id)
    return names


def uses_lazy_imports(script: str | Path) -> bool:
    """Whether the workers of `script` may import LAZY_TORCH_IMPORTS: the script, or a module beside it that the
    script imports, mentions a name of LAZY_IMPORT_USERS (a course_utils module other than the launcher's own counts
    too). True when a file cannot be read or parsed: loading them once costs 1.7 s, but a worker that needs them and
    finds them missing pays that itself, in every launch. A static reading, so it can err both ways (it misses
    torch.func, torch.utils.checkpoint, aliases and imports inside functions); erring, it costs time and never
    changes what a worker computes."""
    import ast

    script = Path(script)
    try:
        tree = ast.parse(script.read_text(), filename=str(script))
        names = _names_in(tree)
        for node in tree.body:                                  # the script's own modules, one level down
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for module in modules:
                beside = script.parent / (module.replace(".", "/") + ".py")
                if beside.is_file():
                    names |= _names_in(ast.parse(beside.read_text(), filename=str(beside)))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return True
    for name in names:
        if name in LAUNCHER_MODULES or any(name.startswith(m + ".") for m in LAUNCHER_MODULES):
            continue
        if any(name == user or name.startswith(user + ".") for user in LAZY_IMPORT_USERS):
            return True
    return False


def _tracebacks_without_dynamo() -> None:
    """torch's log formatter imports torch._dynamo (800 modules, 1.7 s of CPU here) to format any record that
    carries an exception, as torchrun's `logger.exception` does in this process when a worker fails. A filter on
    each handler that uses it formats the exception first, as that formatter would (logging.Formatter's
    formatException), and hands the record over with the text and without the exception: the same output."""
    import logging

    def exception_as_text(record):
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return True

    loggers = [logging.getLogger("torch"), *(lg for name, lg in logging.Logger.manager.loggerDict.items()
                                             if name.startswith("torch.") and isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler.formatter).__name__ == "TorchLogsFormatter" and exception_as_text not in handler.filters:
                handler.addFilter(exception_as_text)


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
    from torch.distributed.run import parse_args, run

    _tracebacks_without_dynamo()

    args = parse_args(sys.argv[1:] if argv is None else argv)
    node = int(args.node_rank) if str(args.node_rank).isdigit() else 0
    forked_exits: list[dict] = []
    if os.environ.get(RESULTS_ENV):
        # torchrun's own temporary files go to the launch's results folder, which the launcher removes: forking
        # workers, torch.multiprocessing leaves a pytorch-errorfile-*.pickle for each one that raised. (Forked
        # workers set this back: worker_entry.)
        tempfile.tempdir = os.environ[RESULTS_ENV]
    if args.run_path and args.start_method == "fork":                  # workers forked from this process
        _watch_forked_workers(forked_exits, node)
        if args.training_script_args and Path(args.training_script).name == "worker_entry.py":
            preload_imports(args.training_script_args[0])

    @record
    def torchrun():
        try:
            run(args)
        except ChildFailedError as err:
            folder = os.environ.get(RESULTS_ENV)
            if folder:
                rows = {row["rank"]: row for row in forked_exits}          # the first exit seen for each rank
                rows.update({row["rank"]: row for row in failure_rows(err.failures, node)})
                write_json_atomically(Path(folder) / f"failures-{os.getpid()}.json",
                                      [rows[rank] for rank in sorted(rows)])
            raise

    code = 0
    try:
        torchrun()
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if err.code is not None and not isinstance(err.code, int):
            print(err.code, file=sys.stderr)
    except BaseException:                               # as the interpreter would report it, then the exit code 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
