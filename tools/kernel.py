"""A Jupyter kernel in a sandbox (tools.sandbox), driven from outside by the grader, cell by cell.

The grader sends each cell's source itself and decides what happened from the kernel's replies, with a timeout per
cell, a cap on the output a cell may print, and an overall deadline; nothing the kernel writes into files is read
back. The kernel talks over Unix sockets in a folder the sandbox shows it (its network namespace has no route to
the grader's), and everything it starts dies with it: closing kills the sandbox's first process, and with it its
PID namespace.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from .notebooks import ROOT
from .sandbox import SANDBOX_UIDS, default_spec, remove_cgroup

MAX_SOCKET_PATH = 107                 # bytes in a Unix socket's path (sun_path holds 108 with its terminating NUL)


class KernelGone(RuntimeError):
    """The kernel died, or was killed for going over a limit; `reason` says which."""


@dataclass
class CellResult:
    status: str                      # "ok", "error", "timeout", "output limit", "dead"
    ename: str = ""
    evalue: str = ""
    traceback: str = ""
    stdout: str = ""                 # what the cell printed (the first `keep` characters)
    output_bytes: int = 0
    seconds: float = 0.0

    @property
    def message(self) -> str:
        if self.status == "ok":
            return ""
        if self.traceback:
            return self.traceback
        return f"{self.ename}: {self.evalue}" if self.ename else self.status


@dataclass
class Limits:
    cell_seconds: float = 120.0
    total_seconds: float = 1800.0
    output_bytes: int = 1 << 20      # per cell: a flood beyond this kills the kernel
    sandbox: dict = field(default_factory=dict)   # tools.sandbox settings (memory_bytes, processes, ...)


def _strip_ansi(text: str) -> str:
    """A traceback's colours removed, and with them every other escape or control character: what is left cannot
    move a terminal's cursor or rewrite its lines (red team, session 42: one pass over `ESC ESC[m [2K` left `ESC[2K`,
    which erased the grader's own FAIL lines on its terminal)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)          # IPython's colours
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "", text)   # what remains of escapes (ESC, CSI), and controls


class SandboxedKernel:
    """Start with `with SandboxedKernel(limits) as k:`, then `k.run(source)` per cell."""

    def __init__(self, limits: Limits | None = None, readonly: list[str | Path] | None = None):
        self.limits = limits or Limits()
        self.max_message = max(64 << 20, 4 * self.limits.output_bytes)
        self.readonly = [str(p) for p in (readonly if readonly is not None else [ROOT / "course_utils", ROOT / "data"])]
        self.protections: dict = {"on": [], "off": {}}
        self.deadline = None
        self.dead_reason = ""
        self._proc = None
        self._client = None
        self._base = None
        self._log_tail = ""

    @property
    def socket_dir(self) -> Path:
        """The folder the sandbox shows the kernel read-write at the same path (its sockets, and the judge's)."""
        return self._base / "ipc"

    # -- lifecycle --------------------------------------------------------------------------------------------
    def __enter__(self) -> "SandboxedKernel":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, ready_timeout: float = 120.0) -> None:
        self.launch()
        self.wait_ready(ready_timeout)

    def launch(self) -> None:
        """Start the sandbox and its kernel without waiting for it (wait_ready does). Call it from the thread that
        will outlive the kernel: the sandbox dies with the thread that started it (its parent-death signal)."""
        self._base = Path(tempfile.mkdtemp(prefix="grade-kernel-"))
        os.chmod(self._base, 0o711)                     # the kernel's user may pass through to its sockets, not list
        sockets, root = self._base / "ipc", self._base / "root"
        longest = len(os.fsencode(sockets / "k-99"))      # ZMQ names its five sockets k-1 .. k-5
        if longest > MAX_SOCKET_PATH:
            raise ValueError(f"the kernel's socket paths under {self._base} would be {longest} bytes long, over the "
                             f"{MAX_SOCKET_PATH} a Unix socket allows: point TMPDIR at a shorter folder")
        sockets.mkdir()
        root.mkdir()
        connection = sockets / "kernel.json"
        write_connection_file(str(connection), transport="ipc", ip=str(sockets / "k"),
                              key=secrets.token_hex(32).encode())
        self._uid = uid = secrets.choice(SANDBOX_UIDS) if os.geteuid() == 0 else None
        self._cgroup = f"workbook-grade-{secrets.token_hex(6)}" if os.geteuid() == 0 else None
        spec = default_spec(**{**self.limits.sandbox, "uid": uid, "readonly": self.readonly, "socket_dir": str(sockets),
                               "cgroup": self._cgroup,
                               "status_file": str(sockets / "status.json"), "root_dir": str(root),
                               "pythonpath": [str(ROOT)]})
        (self._base / "spec.json").write_text(json.dumps(spec))
        if uid is not None:                             # the kernel runs as a user of its own: it must reach its sockets
            os.chown(sockets, uid, uid)
            os.chmod(connection, 0o644)
        command = [sys.executable, "-m", "tools.sandbox", str(self._base / "spec.json"), "--",
                   sys.executable, "-m", "ipykernel_launcher", "-f", str(connection), "--HistoryManager.enabled=False"]
        self._proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()
        # the grader's own ZMQ context: a single message larger than max_message is refused by the socket before
        # it reaches the grader's memory (the kernel then falls silent, and the cell's timeout ends it)
        self._context = zmq.Context()
        self._context.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        self._client = BlockingKernelClient(context=self._context)
        self._client.load_connection_file(str(connection))
        self._client.start_channels()

    def wait_ready(self, ready_timeout: float = 120.0) -> None:
        sockets, uid = self.socket_dir, self._uid
        start = time.monotonic()
        while True:                                       # wait_for_ready, but give up as soon as the sandbox exits
            if self._proc.poll() is not None:
                raise KernelGone(f"the kernel did not start (exit {self._proc.returncode}): {self._log_tail[-2000:]}")
            try:
                self._client.wait_for_ready(timeout=2)
                break
            except RuntimeError:
                if time.monotonic() - start > ready_timeout:
                    raise KernelGone(f"the kernel did not answer within {ready_timeout:.0f} s: {self._log_tail[-2000:]}")
        status_file = sockets / "status.json"
        if status_file.is_file():                         # read before any submitted code has run
            self.protections = json.loads(status_file.read_text())
        # The socket folder is a view of the grader's disk: once the kernel has bound its sockets, it may no longer
        # create files there (a submission could otherwise fill the grader's disk outside its size-limited scratch)
        closed = "socket folder closed to the kernel's writes"
        if uid is not None:
            for path in [sockets, *sockets.iterdir()]:
                os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(sockets, 0o755)
            if isinstance(self.protections, dict):
                self.protections.setdefault("on", []).append(closed)
        elif isinstance(self.protections, dict):
            self.protections.setdefault("off", {})[closed] = ("the kernel runs as the grader's own user (no root "
                                                              "to give it another), so it owns that folder")
        self.deadline = time.monotonic() + self.limits.total_seconds

    def _drain(self) -> None:
        """Keep the last few kB of what the sandbox and kernel print outside the messaging protocol."""
        for chunk in iter(lambda: self._proc.stdout.read1(4096), b""):
            self._log_tail = (self._log_tail + chunk.decode(errors="replace"))[-8000:]

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self.dead_reason

    def interrupt(self) -> None:
        """SIGINT the kernel's running cell (forwarded to the kernel by the sandbox); an idle kernel ignores it."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGINT)

    def signal_kill(self) -> None:
        """SIGKILL the kernel's launcher (its namespace dies with it) without waiting: the grader kills both
        kernels of a submission judged apart first, so that their teardowns overlap; close() then reaps."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill(self, reason: str) -> None:
        self.dead_reason = self.dead_reason or reason
        if self._proc is not None and self._proc.poll() is None:
            self.signal_kill()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:              # never raised to the grader: the report goes on
                self.dead_reason += " (its launcher did not exit within 30 s of SIGKILL)"

    def close(self) -> None:
        if self._client is not None:
            self._client.stop_channels()
        if getattr(self, "_context", None) is not None:
            self._context.destroy(linger=0)
            self._context = None
        self.kill("closed")
        remove_cgroup(getattr(self, "_cgroup", None))
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)

    # -- running cells ----------------------------------------------------------------------------------------
    def run(self, source: str, timeout: float | None = None, keep: int = 20000) -> CellResult:
        """Execute `source`; never raises for what the code does. A cell over its time is interrupted (and the
        kernel killed if it does not stop); a cell over its output cap, or past the overall deadline, kills it."""
        if not self.alive():
            return CellResult("dead", evalue=self.dead_reason or "the kernel is not running")
        start = time.monotonic()
        limit = min(timeout or self.limits.cell_seconds, max(0.0, self.deadline - start))
        msg_id = self._client.execute(source, store_history=False, allow_stdin=False, stop_on_error=False)
        result = CellResult("ok")
        stdout: list[str] = []
        interrupted_at = None
        idle = False
        while not idle:
            now = time.monotonic()
            if interrupted_at is None and now - start > limit:
                over_total = now >= self.deadline - 0.01
                interrupted_at = now
                if over_total:
                    self.kill(f"the overall limit of {self.limits.total_seconds:.0f} s ran out")
                    return CellResult("dead", evalue=self.dead_reason, seconds=now - start)
                self.interrupt()
                result.status = "timeout"
            if interrupted_at is not None and now - interrupted_at > 10:
                self.kill(f"a cell did not stop within 10 s of being interrupted after {limit:.0f} s (or it sent a "
                          f"message over {self.max_message:,} bytes, which the grader refuses)")
                return CellResult("timeout", evalue=f"Timeout of {limit:.0f} seconds exceeded; the kernel had to be killed",
                                  seconds=now - start)
            if self._proc.poll() is not None:
                self.kill("the kernel died (a crash, os._exit, a signal, or out of memory)")
                return CellResult("dead", evalue=self.dead_reason, stdout="".join(stdout)[-keep:], seconds=now - start)
            try:
                msg = self._client.get_iopub_msg(timeout=0.2)
            except Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            # every message the kernel sends while the cell runs counts, errors and other parents' included
            result.output_bytes += len(json.dumps(content, default=str).encode())
            if result.output_bytes > self.limits.output_bytes:
                self.kill(f"a cell printed more than {self.limits.output_bytes:,} bytes")
                return CellResult("output limit", evalue=self.dead_reason, stdout="".join(stdout)[-keep:],
                                  output_bytes=result.output_bytes, seconds=time.monotonic() - start)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if kind == "status" and content.get("execution_state") == "idle":
                idle = True
            elif kind == "stream" and content.get("name") == "stdout":
                stdout.append(content.get("text", ""))
            elif kind == "error":
                result.ename, result.evalue = content.get("ename", ""), content.get("evalue", "")
                result.traceback = _strip_ansi("\n".join(content.get("traceback", [])))[-4000:]
                if result.status == "ok":
                    result.status = "error"
        reply = self._reply(msg_id)
        if reply is None and result.status == "ok":
            result.status, result.ename, result.evalue = "error", "NoReply", "the kernel sent no reply to this cell"
        elif reply is not None and reply.get("status") != "ok" and result.status == "ok":
            result.status = "error"
            result.ename, result.evalue = reply.get("ename", "error"), reply.get("evalue", "")
        if result.status == "timeout":
            result.ename, result.evalue = "Timeout", f"Timeout of {limit:.0f} seconds exceeded"
            result.traceback = result.traceback + f"\nTimeout of {limit:.0f} seconds exceeded"
        result.stdout = "".join(stdout)[-keep:]              # the end: where a completion token is printed
        result.seconds = time.monotonic() - start
        return result

    def _reply(self, msg_id: str, timeout: float = 10.0) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self._client.get_shell_msg(timeout=0.5)
            except Empty:
                if not self.alive():
                    return None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg["content"]
        return None
