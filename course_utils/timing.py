"""Timing that tells the truth: warm up, synchronise the device, repeat, report the median."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Hashable, Mapping

import torch

from .device import synchronize


@dataclass(frozen=True)
class BenchmarkResult:
    """Wall-clock seconds of each timed call, with the usual summaries."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    def median_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """A distribution-free confidence interval for the median (see `median_interval`)."""
        return median_interval(self.samples, confidence)

    def __str__(self) -> str:
        return f"{format_seconds(self.median)} median (min {format_seconds(self.min)}, max {format_seconds(self.max)}, n={len(self.samples)})"


def median_interval(samples, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval for the median of the distribution the samples come from, from their order statistics.

    Each sample falls below the true median with probability 1/2, so the number below it is Binomial(n, 1/2), and
    [x_(j), x_(n+1-j)] (sorted, 1-based) covers the median with probability 1 - 2 P(Binomial < j), whatever the
    distribution. j is the largest index keeping that at least `confidence`; with too few samples for any such j
    (fewer than 6 at 95%) the interval is (-inf, inf)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    xs = sorted(samples)
    n = len(xs)
    j, below = 0, 0.0                     # below = P(Binomial(n, 1/2) < j + 1)
    while j < n // 2:
        below += math.comb(n, j) / 2**n
        if 1 - 2 * below < confidence:
            break
        j += 1
    if j == 0:
        return (-math.inf, math.inf)
    return (xs[j - 1], xs[n - j])


def _settled(samples, stable: float) -> bool:
    lo, hi = median_interval(samples)
    return (hi - lo) / 2 <= stable * statistics.median(samples)


def format_seconds(seconds: float) -> str:
    """A duration with a readable unit: '3.2 ms', '41 µs', '1.25 s'."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _check_count(name: str, value: Any, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < lowest:
        raise ValueError(f"{name} must be >= {lowest}, got {value}")
    return int(value)


def _check_stable(stable: float | None) -> None:
    if stable is not None and not stable > 0:
        raise ValueError(f"stable must be positive (a fraction of the median, e.g. 0.02), got {stable}")


def benchmark(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    repeat: int = 10,
    device: torch.device | str | None = None,
    max_seconds: float | None = None,
    min_repeat: int = 3,
    stable: float | None = None,
) -> BenchmarkResult:
    """Call `fn()` `warmup` times untimed, then `repeat` times timed, synchronising `device` around each call.

    With `max_seconds`, timing stops early once the timed calls have taken that long in total, but never before
    `min_repeat` samples (or `repeat`, if smaller): a slow case (e.g. bfloat16 on a CPU without bfloat16 units)
    then costs a few samples instead of `repeat`, and still has a spread.
    With `stable` (e.g. 0.02), timing also stops once the median is pinned down: once the 95% confidence interval of
    the median (`median_interval`) is at most `stable` times the median on either side. A quiet machine then
    needs few samples and a noisy one gets up to `repeat`."""
    if not callable(fn):
        raise TypeError(f"fn must be callable with no arguments, got {type(fn).__name__}")
    warmup = _check_count("warmup", warmup, 0)
    repeat = _check_count("repeat", repeat, 1)
    min_repeat = _check_count("min_repeat", min_repeat, 1)
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    _check_stable(stable)
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
        if len(samples) >= min_repeat and ((max_seconds is not None and sum(samples) >= max_seconds)
                                           or (stable is not None and _settled(samples, stable))):
            break
    return BenchmarkResult(tuple(samples))


def benchmark_interleaved(
    fns: Mapping[Hashable, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeat: int = 5,
    device: torch.device | str | None = None,
    stable: float | None = None,
) -> dict[Hashable, BenchmarkResult]:
    """Time several functions in rounds: every round calls each of them once, in order (`warmup` rounds untimed).

    A machine whose speed drifts during a sweep (another tenant, a frequency change) then slows every case of the
    sweep alike and shows up in each one's spread, instead of biasing whichever cases ran during the slow spell.
    With `stable`, the rounds stop before `repeat` once every case's median is pinned down (see `benchmark`)."""
    if not isinstance(fns, Mapping) or not fns:
        raise TypeError(f"fns must be a non-empty mapping of name -> callable, got {fns!r}")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{name!r}] must be callable with no arguments, got {type(fn).__name__}")
    warmup = _check_count("warmup", warmup, 0)
    repeat = _check_count("repeat", repeat, 1)
    _check_stable(stable)
    samples: dict[Hashable, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeat):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_ >= warmup:
                samples[name].append(time.perf_counter() - start)
        if stable is not None and round_ >= warmup and all(_settled(s, stable) for s in samples.values()):
            break
    return {name: BenchmarkResult(tuple(s)) for name, s in samples.items()}
