"""Peak memory of a block of tensor code, on any device.

On CUDA this is the caching allocator's own peak (torch.cuda.max_memory_allocated). On the CPU, where torch keeps
no such statistic, a TorchDispatchMode sees every tensor an operation creates and a weak reference on its storage
sees it freed, so `peak` is the largest number of bytes held at once by tensors created inside the block (an
output sharing an input's storage, such as a view of a tensor made before the block, adds nothing).
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _StorageTracker(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.total = 0
        self.count = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # An output that shares an input's storage (a view, an in-place or out= result) allocated nothing: counting
        # its storage would count a tensor made before the block as if the block had made it.
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self.live and key not in inputs:
                    self.live[key] = nbytes
                    self.current += nbytes
                    self.total += nbytes
                    self.count += 1
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._release, key)
        return out


class track_peak_memory:
    """Context manager: `with track_peak_memory(device) as mem: ...`, then `mem.peak` is the peak in bytes
    allocated inside the block (beyond what was already allocated when it started), `mem.total` the bytes of every
    allocation made inside it added up (freed or not), and `mem.count` the number of those allocations."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"track_peak_memory supports cpu and cuda, not {self.device.type!r}")
        self.peak = 0
        self.total = 0
        self.count = 0
        self._tracker: _StorageTracker | None = None
        self._baseline = 0
        self._stats: dict[str, int] = {}

    def __enter__(self) -> "track_peak_memory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
            self._stats = torch.cuda.memory_stats(self.device)
        else:
            self._tracker = _StorageTracker()
            self._tracker.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._baseline
            stats = torch.cuda.memory_stats(self.device)
            self.total = stats.get("allocated_bytes.all.allocated", 0) - self._stats.get("allocated_bytes.all.allocated", 0)
            self.count = stats.get("allocation.all.allocated", 0) - self._stats.get("allocation.all.allocated", 0)
        else:
            self._tracker.__exit__(*exc)
            self.peak, self.total, self.count = self._tracker.peak, self._tracker.total, self._tracker.count
