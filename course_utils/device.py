"""Pick the compute device once, with a CPU fallback, and make runs repeatable."""
from __future__ import annotations

import os
import random
from numbers import Integral

import numpy as np
import torch

DEVICE_ENV_VAR = "COURSE_DEVICE"
KNOWN_DEVICES = ("cuda", "mps", "cpu")  # in order of preference
MAX_SEED = 2**32 - 1  # numpy's legacy seeding accepts no more


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def is_available(kind: str) -> bool:
    """Whether a device type (`cuda`, `mps` or `cpu`) can be used on this machine."""
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return _mps_available()
    if kind == "cpu":
        return True
    raise ValueError(f"unknown device type {kind!r}: choose one of {', '.join(KNOWN_DEVICES)}")


def get_device(prefer: str | None = None) -> torch.device:
    """Best available device (`cuda` > `mps` > `cpu`), or the one named by `prefer` / $COURSE_DEVICE.

    A name that is unknown, or known but not available here, is a ValueError (never a silent fallback
    when the user asked for something specific). An index such as "cuda:1" is accepted.
    """
    source = "prefer"
    if prefer is None:
        env = os.environ.get(DEVICE_ENV_VAR, "").strip()
        if env:
            prefer, source = env, f"${DEVICE_ENV_VAR}"
    if prefer is None:
        for kind in KNOWN_DEVICES:
            if is_available(kind):
                return torch.device(kind)
    if not isinstance(prefer, str):
        raise TypeError(f"prefer must be a device name such as 'cpu' or 'cuda', got {type(prefer).__name__}")
    name = prefer.strip().lower()
    kind, _, index = name.partition(":")
    if kind not in KNOWN_DEVICES or (index and not index.isdigit()):
        raise ValueError(f"unknown device {prefer!r} (from {source}): choose one of {', '.join(KNOWN_DEVICES)}")
    if not is_available(kind):
        usable = [k for k in KNOWN_DEVICES if is_available(k)]
        raise ValueError(f"device {prefer!r} (from {source}) is not available on this machine; available: {', '.join(usable)}")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {prefer!r} (from {source}) does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait until queued work on `device` has finished (a no-op on the CPU). None means every accelerator in use."""
    kind = torch.device(device).type if device is not None else None
    if kind in (None, "cuda") and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    if kind in (None, "mps") and _mps_available():
        torch.mps.synchronize()


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """The low-precision dtype `torch.autocast` should use on `device`: bfloat16 where the hardware computes in it
    (CPUs, NVIDIA GPUs of compute capability 8.0 and later: A100, RTX 30xx, H100), float16 elsewhere (a T4 or V100,
    Apple GPUs). `torch.cuda.is_bf16_supported()` is not the test: it also counts bfloat16 that a T4 only emulates,
    several times slower than its float16 tensor cores. float16's narrow range needs loss scaling
    (`torch.amp.GradScaler`); bfloat16 has float32's range and does not."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    raise ValueError(f"no autocast dtype known for device type {device.type!r}: use one of {', '.join(KNOWN_DEVICES)}")


def seed_everything(seed: int) -> int:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators; returns the seed for logging."""
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be a non-negative integer, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must lie in [0, {MAX_SEED}], got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed
