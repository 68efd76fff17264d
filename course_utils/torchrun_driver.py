"""torchrun that also writes down how each worker ended: `python -m course_utils.torchrun_driver <torchrun args>`.

It runs torchrun itself (`torch.distributed.run`, same arguments, same output). When workers fail, torchrun
raises `ChildFailedError` holding one `ProcessFailure` per failed rank (exit code, signal, error file); this
driver saves them as JSON to `$WORKBOOK_RESULTS_DIR/failures-<pid>.json` before torchrun reports as usual. A worker
killed by a signal leaves no error file of its own, so this is how the launcher learns its rank and signal.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .distributed import RESULTS_ENV, write_json_atomically


def failure_rows(failures: dict, node: int) -> list[dict]:
    """JSON rows for torchrun's {global rank: ProcessFailure}."""
    rows = []
    for rank, f in sorted(failures.items()):
        signal = f.signal_name() if f.exitcode < 0 else None
        rows.append({"rank": int(rank), "node": node, "local_rank": f.local_rank, "pid": f.pid,
                     "exitcode": f.exitcode, "signal": signal, "time": f.timestamp,
                     "has_error_file": bool(f.error_file_data.get("message"))})
    return rows


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)

    @record
    def torchrun():
        try:
            run(args)
        except ChildFailedError as err:
            folder = os.environ.get(RESULTS_ENV)
            if folder:
                node = int(args.node_rank) if str(args.node_rank).isdigit() else 0
                write_json_atomically(Path(folder) / f"failures-{os.getpid()}.json", failure_rows(err.failures, node))
            raise

    torchrun()


if __name__ == "__main__":
    main()
