"""A pytest plugin for nbval runs: append one JSON line per executed cell (index, tags, outcome, message, seconds) to the
file named by $WORKBOOK_REPORT, flushed at once, so a run killed half-way still leaves what it did. Results are
keyed on cell tags, never on nbval's item names (which changed between releases)."""
from __future__ import annotations

import json
import os
import re

import pytest

MAX_MESSAGE = 2000
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# Read once, when pytest loads this plugin, and removed from the environment: the kernel nbval starts afterwards
# inherits os.environ, and a submission that learnt the path could append rows of its own.
_REPORT_PATH = os.environ.pop("WORKBOOK_REPORT", None)


def _record(item, outcome: str, message: str, seconds: float) -> None:
    path = _REPORT_PATH
    cell = getattr(item, "cell", None)
    if not path or cell is None:
        return
    row = {
        "cell": cell.get("metadata", {}).get("workbook_index", getattr(item, "cell_num", None)),
        "tags": list(cell.get("metadata", {}).get("tags", [])),
        "outcome": outcome,
        "message": ANSI.sub("", message)[-MAX_MESSAGE:],
        "seconds": round(seconds, 3),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        message = "" if report.passed else str(report.longrepr)
        _record(item, "skipped" if report.skipped else report.outcome, message, report.duration)


def _patch_dead_kernel_wait() -> None:
    """nbval waits the whole cell timeout for a reply from a kernel that has died (a crash, os._exit, a segfault).
    Poll in one-second slices instead and give up as soon as the kernel process is gone."""
    import time
    from queue import Empty

    from nbval.kernel import RunningKernel

    original = RunningKernel.await_reply
    if getattr(original, "_workbook_patched", False):
        return

    def await_reply(self, msg_id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                raise Empty()
            try:
                return original(self, msg_id, timeout=left)
            except Empty:
                if not self.is_alive():
                    raise RuntimeError("the kernel died while running this cell (crash, os._exit or out of memory)")

    await_reply._workbook_patched = True
    RunningKernel.await_reply = await_reply


def _patch_kernel_transport() -> None:
    """nbval starts its kernel over TCP, on ports found free by binding port 0 and closing them, which another
    process may take before the kernel binds them (05's launches bind ports of their own while its kernel runs, and
    `make test` runs nbval beside other tests' processes in tests/test_notebooks.py). nbval's own start_new_kernel
    builds its manager through the name KernelManager: that name now makes one over Unix sockets, in a folder of
    this run's own (tools.notebooks.ipc_kernel_manager)."""
    import tempfile
    from pathlib import Path

    import nbval.kernel

    from tools.kernel import MAX_SOCKET_PATH
    from tools.notebooks import ipc_kernel_manager

    if getattr(nbval.kernel.KernelManager, "_workbook_patched", False):
        return

    def kernel_manager(kernel_name, **options):
        # in the run's scratch folder (tools.nbval_run sets TMPDIR), unless a socket's path there would be too long
        folder = Path(tempfile.mkdtemp(prefix="k-"))
        if len(os.fsencode(folder / "k-99")) > MAX_SOCKET_PATH:
            folder.rmdir()
            folder = Path(tempfile.mkdtemp(prefix="nbval-k-", dir="/tmp"))
        return ipc_kernel_manager(folder, kernel_name, **options)

    kernel_manager._workbook_patched = True
    nbval.kernel.KernelManager = kernel_manager


_patch_dead_kernel_wait()
_patch_kernel_transport()
