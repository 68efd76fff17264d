"""Stopping a launched process together with everything it started."""
from __future__ import annotations

import signal

import psutil


def kill_tree(pid: int, wait: float = 10.0) -> None:
    """SIGKILL a process and all its descendants, then wait up to `wait` seconds for them to go. Launchers such as
    torchrun and Jupyter start children in sessions of their own, so killing the parent's process group misses them
    (and they keep the parent's output pipe open)."""
    try:
        root = psutil.Process(pid)
        victims = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=wait)
