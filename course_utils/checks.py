"""Assertions for check cells: when a student's answer is wrong, say what was expected, what came out, and a hint."""
from __future__ import annotations

from typing import Any

import numpy as np


def _to_numpy(value: Any, name: str, failure: type[Exception] = AssertionError) -> np.ndarray:
    """`value` as an array. A value that cannot be one fails the check (AssertionError: the student's result is
    wrong); for the check's own expected value pass failure=TypeError (the check itself is wrong)."""
    if value is None:
        raise failure(f"{name} is None: did the function forget to `return` its result?")
    if hasattr(value, "detach"):  # a torch tensor, on any device; numpy has no bfloat16, so widen first
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        value = value.numpy()
    try:
        array = np.asarray(value)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise failure(f"{name} cannot be compared numerically: {err}") from err
    if array.dtype == object:
        raise failure(f"{name} cannot be compared numerically (got {type(value).__name__})")
    return array


def _with_hint(message: str, hint: str | None) -> str:
    return f"{message}\nHint: {hint}" if hint else message


def assert_close(
    actual: Any,
    expected: Any,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    name: str = "result",
    hint: str | None = None,
) -> None:
    """Raise AssertionError unless |actual - expected| <= atol + rtol * |expected| everywhere.

    The message names the shape problem, or the largest error, where it is, and the two values there.
    Works for Python numbers, NumPy arrays and torch tensors (on any device).
    """
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be non-negative, got rtol={rtol}, atol={atol}")
    a = _to_numpy(actual, name)
    e = _to_numpy(expected, "expected", failure=TypeError)
    if a.shape != e.shape:
        raise AssertionError(_with_hint(f"{name} has shape {a.shape}, expected shape {e.shape}.", hint))
    a64 = a.astype(np.float64)
    e64 = e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    if np.any(nan_a != nan_e):
        where = np.unravel_index(np.argmax(nan_a != nan_e), a.shape) if a.shape else ()
        raise AssertionError(_with_hint(f"{name} has NaN where expected has a number (or vice versa) at index {where}: got {a64[where]}, expected {e64[where]}.", hint))
    ok = nan_a | (np.abs(a64 - e64) <= atol + rtol * np.abs(e64)) | (a64 == e64)
    if np.all(ok):
        return
    err = np.where(ok, 0.0, np.abs(a64 - e64))
    err = np.where(np.isnan(err), np.inf, err)
    flat = int(np.argmax(err))
    where = np.unravel_index(flat, a.shape) if a.shape else ()
    where_txt = f" at index {tuple(int(i) for i in where)}" if a.shape else ""
    bad = int(np.count_nonzero(~ok))
    raise AssertionError(_with_hint(
        f"{name} is not close to the expected value: {bad} of {ok.size} entries off; "
        f"largest error {err[where] if a.shape else err:.3g}{where_txt} (got {a64[where]!r}, expected {e64[where]!r}; "
        f"tolerance atol={atol:g} + rtol={rtol:g}·|expected|).",
        hint,
    ))


def check_that(condition: bool, claim: str, *, expected: Any = None, got: Any = None, hint: str | None = None) -> None:
    """Raise AssertionError stating `claim` (and what was expected and what came out) when `condition` is false."""
    if not isinstance(condition, (bool, np.bool_)):
        raise TypeError(f"condition must be a bool, got {type(condition).__name__}: compare explicitly")
    if condition:
        return
    parts = [f"Check failed: {claim}."]
    if expected is not None:
        parts.append(f"Expected: {expected}.")
    if got is not None:
        parts.append(f"Got: {got}.")
    raise AssertionError(_with_hint(" ".join(parts), hint))
