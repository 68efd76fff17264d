"""The machine's own ceilings (matmul FLOP/s, copy bandwidth) and a report of what it is."""
from __future__ import annotations

import os
import platform
import sys
import time
from numbers import Integral

import torch

from .device import get_device
from .timing import benchmark


def _resolve(device: torch.device | str | None) -> torch.device:
    return get_device() if device is None else torch.device(device)


def measure_matmul_flops(
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    n: int = 1024,
    repeat: int = 5,
) -> float:
    """Achieved FLOP/s of an n x n @ n x n matmul (2 n^3 flops, median of `repeat` timed runs, or of 3 once they
    take a second: a dtype without fast units here, e.g. bfloat16 on most CPUs, can be 100x slower)."""
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    device = _resolve(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    result = benchmark(lambda: a @ b, warmup=2, repeat=repeat, device=device, max_seconds=1.0)
    return 2.0 * n**3 / result.median


def measure_memory_bandwidth(
    device: torch.device | str | None = None,
    nbytes: int = 1 << 27,
    repeat: int = 5,
) -> float:
    """Achieved bytes/s of copying an `nbytes` buffer into another (counts the read and the write)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, Integral) or nbytes < 4:
        raise ValueError(f"nbytes must be an integer >= 4, got {nbytes!r}")
    device = _resolve(device)
    src = torch.ones(int(nbytes) // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    result = benchmark(lambda: dst.copy_(src), warmup=2, repeat=repeat, device=device)
    return 2.0 * src.numel() * 4 / result.median


def last_level_cache_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Size of the CPU's largest cache (Linux's sysfs: the highest `level` among `index*/`), or 0 where unknown.
    Data larger than it come from memory; smaller data may stay in the cache and run at its speed instead."""
    from pathlib import Path

    best_level, size = 0, 0
    for index in sorted(Path(root).glob("index*")):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            value = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        if level > best_level or (level == best_level and value > size):
            best_level, size = level, value
    return size


def environment_info() -> dict[str, str]:
    """Hardware, threads, device and library versions, as an ordered mapping of strings."""
    import matplotlib
    import numpy

    device = get_device()
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu cores (os)": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "device": str(device),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return info


def environment_report() -> str:
    """A few aligned lines describing this machine; every notebook prints it in its setup cell."""
    info = environment_info()
    width = max(map(len, info))
    return "\n".join(f"{key:<{width}} : {value}" for key, value in info.items())


class OtherLoad:
    """CPU time this machine spent outside this process while the `with` block ran, in cores: other processes
    (`others`) and, on a virtual machine, time the hypervisor gave to other guests (`stolen`). Read from
    /proc/stat (Linux); elsewhere both stay None. A timing that disagrees with the last run is explained, or
    not, by these two numbers.

        with cu.OtherLoad() as load:
            ...timed work...
        print(load)          # 'other processes 0.9 cores, stolen 0.0 cores'

    With `own_children=True`, child processes this process started and waited for in the block (a measurement's
    own workers) count as its own time, not as other processes'."""

    def __init__(self, own_children: bool = False):
        self.own_children = own_children
        self.others: float | None = None
        self.stolen: float | None = None
        self.seconds: float | None = None

    @staticmethod
    def _stat() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:3]) + sum(fields[5:7])            # user, nice, system, irq, softirq
        return busy, (fields[7] if len(fields) > 7 else 0)   # and steal

    def __enter__(self) -> "OtherLoad":
        self._start = (time.perf_counter(), self._stat(), os.times())
        return self

    def __exit__(self, *exc) -> None:
        t0, stat0, own0 = self._start
        stat1, own1, elapsed = self._stat(), os.times(), time.perf_counter() - t0
        self.seconds = elapsed
        if stat0 is None or stat1 is None or elapsed <= 0:
            return
        tick = os.sysconf("SC_CLK_TCK")
        busy = (stat1[0] - stat0[0]) / tick
        own = (own1.user - own0.user) + (own1.system - own0.system)
        if self.own_children:
            own += (own1.children_user - own0.children_user) + (own1.children_system - own0.children_system)
        self.others = max(0.0, busy - own) / elapsed
        self.stolen = (stat1[1] - stat0[1]) / tick / elapsed

    def __str__(self) -> str:
        if self.others is None:
            return "other load unknown (no /proc/stat)"
        return f"other processes {self.others:.1f} cores, stolen by the hypervisor {self.stolen:.1f} cores"
