"""The machine's own ceilings (matmul FLOP/s, copy bandwidth) and a report of what it is."""
from __future__ import annotations

import os
import platform
import sys
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
