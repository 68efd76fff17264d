"""Assertions for check cells: when a student's answer is wrong, say what was expected, what came out, and a hint."""
from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import numpy as np

# The NumPy functions the checks use, captured when this module is (re)loaded: code that a check calls (a student's
# function) and that replaces numpy.all or numpy.abs meanwhile does not change what the check computes.
_np = SimpleNamespace(**{name: getattr(np, name) for name in (
    "asarray", "isnan", "isfinite", "errstate", "any", "all", "abs", "where", "argmax", "unravel_index", "count_nonzero", "float64", "complex128", "inf",
    "ndarray", "generic", "bool_")})
_PLAIN = (bool, int, float, complex)


def _one_of(kind: type, types) -> bool:
    """Is `kind` one of `types`, by identity? `kind in types` compares with ==, and a class whose metaclass defines
    __eq__ answers that itself: red-team round 13 returned an object of a class that said it was int, and
    check_equal then asked the object whether it equalled the expected value."""
    for t in types:
        if kind is t:
            return True
    return False


def _plain_values(value: Any, depth: int = 0) -> bool:
    """True for numbers, NumPy arrays and scalars, and lists or tuples of them: values NumPy converts without
    calling any code of theirs (an arbitrary object's __array__, __float__ or __len__ would run during the check)."""
    kind = type(value)
    if _one_of(kind, _PLAIN) or kind is _np.ndarray or id(kind) in _NUMPY_SCALAR_IDS:
        return True
    torch = sys.modules.get("torch")
    if torch is not None and depth and _one_of(kind, (torch.Tensor, torch.nn.Parameter)):
        return True                              # inside a list: the real classes only (NumPy calls __array__)
    if (kind is list or kind is tuple) and depth < 32:
        return all(_plain_values(v, depth + 1) for v in value)
    return False


def _to_numpy(value: Any, name: str, failure: type[Exception] = AssertionError) -> np.ndarray:
    """`value` as an array. A value that cannot be one fails the check (AssertionError: the student's result is
    wrong); for the check's own expected value pass failure=TypeError (the check itself is wrong)."""
    if value is None:
        raise failure(f"{name} is None: did the function forget to `return` its result?")
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(type(value), torch.Tensor):   # (isinstance would ask value.__class__)
        tensor = _plain_tensor(torch, value, name, failure)
        base = torch._C.TensorBase                # the C methods: nothing patched on torch.Tensor is called
        with torch._C.DisableTorchFunction():     # numpy has no bfloat16, so widen first
            value = base.numpy(base.double(tensor) if base.is_floating_point(tensor) else tensor)
    elif not _plain_values(value):
        raise failure(f"{name} must be a number, a list of numbers, a NumPy array or a torch tensor, "
                      f"got {type(value).__name__}")
    try:
        array = _np.asarray(value)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise failure(f"{name} cannot be compared numerically: {err}") from err
    if array.dtype == object:
        raise failure(f"{name} cannot be compared numerically (got {type(value).__name__})")
    return array


def _plain_tensor(torch: Any, value: Any, name: str, failure: type[Exception] = AssertionError) -> Any:
    """A new torch.Tensor (the class itself, on the CPU) with a copy of `value`'s data, read with the tensor's own C
    methods: a subclass that overrides __torch_function__, methods or attributes has no say in what comes out, and
    one that intercepts the dispatcher (__torch_dispatch__) is refused, since even C methods would call its code."""
    with torch._C.DisableTorchFunction():
        if torch._C._dispatch_keys(value).has(torch._C.DispatchKey.Python):
            raise failure(f"{name} is a {type(value).__name__} that intercepts PyTorch's dispatcher: return a plain "
                          f"torch.Tensor")
        base = torch._C.TensorBase
        tensor = base.clone(base.cpu(base.detach(value)))
    if type(tensor) is not torch.Tensor:                           # pragma: no cover - defensive
        raise failure(f"{name} could not be read as a plain torch.Tensor")
    return tensor


def plain(value: Any, name: str = "result") -> Any:
    """A copy of a function's result that a check can compute with safely: a torch tensor (of any subclass)
    becomes a new plain torch.Tensor on the CPU with the same data and dtype; a NumPy array a new array; a tuple or
    list element by element; numbers, strings and None stay. Anything else fails the check: an object of the
    student's own class could answer a check's questions (its shape, its sum, ==) however it likes."""
    torch = sys.modules.get("torch")
    kind = type(value)
    if torch is not None and issubclass(type(value), torch.Tensor):   # (isinstance would ask value.__class__)
        return _plain_tensor(torch, value, name)
    if _one_of(kind, _EXACT):
        return value
    if kind is _np.ndarray:
        if value.dtype == object:
            raise AssertionError(f"{name} is a NumPy array of Python objects; return numbers")
        return value.copy()
    if id(kind) in _NUMPY_SCALAR_IDS:         # NumPy's own scalar types only: a subclass can claim __module__ "numpy"
        return kind(value)
    if kind is tuple or kind is list:
        return kind(plain(v, f"{name}[{i}]") for i, v in enumerate(value))
    raise AssertionError(f"{name} must be a tensor, an array, a number, or a tuple or list of them; "
                         f"got {kind.__name__}")


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
    # complex values compare as complex (|a - e| is the modulus): cast to float64, a complex result would keep only
    # its real part, and any imaginary part would pass (red team of session 40, on 00.1)
    wide = _np.complex128 if "c" in (a.dtype.kind, e.dtype.kind) else _np.float64
    a64 = a.astype(wide)
    e64 = e.astype(wide)
    nan_a, nan_e = _np.isnan(a64), _np.isnan(e64)
    if _np.any(nan_a != nan_e):
        where = _np.unravel_index(_np.argmax(nan_a != nan_e), a.shape) if a.shape else ()
        raise AssertionError(_with_hint(f"{name} has NaN where expected has a number (or vice versa) at index {where}: got {a64[where]}, expected {e64[where]}.", hint))
    # an infinity matches only itself (as in numpy.isclose): |5 - inf| <= atol + rtol * inf would let any finite value
    # pass where inf is expected (red team, session 42)
    finite = _np.isfinite(a64) & _np.isfinite(e64)
    with _np.errstate(invalid="ignore"):                 # inf - inf, where both are the same infinity
        ok = nan_a | (a64 == e64) | (finite & (_np.abs(a64 - e64) <= atol + rtol * _np.abs(e64)))
        if _np.all(ok):
            return
        err = _np.where(ok, 0.0, _np.abs(a64 - e64))
    err = _np.where(_np.isnan(err), _np.inf, err)
    flat = int(_np.argmax(err))
    where = _np.unravel_index(flat, a.shape) if a.shape else ()
    where_txt = f" at index {tuple(int(i) for i in where)}" if a.shape else ""
    bad = int(_np.count_nonzero(~ok))
    raise AssertionError(_with_hint(
        f"{name} is not close to the expected value: {bad} of {ok.size} entries off; "
        f"largest error {err[where] if a.shape else err:.3g}{where_txt} (got {a64[where]!r}, expected {e64[where]!r}; "
        f"tolerance atol={atol:g} + rtol={rtol:g}·|expected|).",
        hint,
    ))


def check_that(condition: bool, claim: str, *, expected: Any = None, got: Any = None, hint: str | None = None) -> None:
    """Raise AssertionError stating `claim` (and what was expected and what came out) when `condition` is false."""
    if not isinstance(condition, (bool, _np.bool_)):
        raise TypeError(f"condition must be a bool, got {type(condition).__name__}: compare explicitly")
    if condition:
        return
    parts = [f"Check failed: {claim}."]
    if expected is not None:
        parts.append(f"Expected: {expected}.")
    if got is not None:
        parts.append(f"Got: {got}.")
    raise AssertionError(_with_hint(" ".join(parts), hint))


_EXACT = (bool, int, float, complex, str, bytes, type(None))
# NumPy's own scalar classes (float64, int32, bool_...), by identity: a subclass of one (whatever it says its
# __module__ is) has methods of its own that a check would call.
_NUMPY_SCALARS = frozenset(t for t in vars(np).values() if isinstance(t, type) and issubclass(t, _np.generic)
                           and t.__module__ == "numpy")
_NUMPY_SCALAR_IDS = frozenset(map(id, _NUMPY_SCALARS))   # looked up by id: hashing a class can run its metaclass


def _exactly_plain(value: Any, depth: int = 0) -> bool:
    """Built-in values all the way down (numbers, strings, None, and tuples, lists and dicts of them): comparing
    them with == runs only Python's own code, never a method of the value's class."""
    kind = type(value)
    if _one_of(kind, _EXACT):
        return True
    if depth >= 32:
        return False
    if kind is tuple or kind is list:
        return all(_exactly_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(_exactly_plain(k, depth + 1) and _exactly_plain(v, depth + 1) for k, v in value.items())
    return False


def check_equal(actual: Any, expected: Any, claim: str, *, hint: str | None = None) -> None:
    """Raise AssertionError unless `actual == expected`, where `actual` must be a built-in value all the way down
    (an int, a list of tuples, a dict of floats...): an object of the student's own class could claim to equal
    anything through its __eq__, so it fails the check instead of being asked."""
    if not _exactly_plain(expected):
        raise TypeError(f"check_equal compares built-in values; the expected value is a {type(expected).__name__}")
    if not _exactly_plain(actual):
        raise AssertionError(_with_hint(
            f"Check failed: {claim}. Expected the built-in value {expected!r}; got an object of type "
            f"{type(actual).__name__} (return plain Python values: int, float, tuple, list, dict).", hint))
    if actual != expected:
        raise AssertionError(_with_hint(f"Check failed: {claim}. Expected: {expected!r}. Got: {actual!r}.", hint))


def needs_exercise(exercise: str, ready: bool) -> None:
    """Stop a cell that uses what an exercise above computes, while that exercise is not solved: with the stub, its
    cell raised NotImplementedError and left names undefined or empty, and without this the cells after it would
    fail with a NameError or draw an empty plot, which says nothing about what to do. `ready` is whether what the
    cell needs is there (e.g. `"fit" in globals()`)."""
    if not isinstance(exercise, str) or not exercise.strip():
        raise ValueError(f"needs_exercise: name the exercise (e.g. 'ex00.2'), got {exercise!r}")
    if not isinstance(ready, (bool, np.bool_)):
        raise TypeError(f"needs_exercise: `ready` must be True or False, got {type(ready).__name__}")
    if not ready:
        raise NotImplementedError(f"This cell uses what exercise {exercise} computes, and it is not solved yet (a cell "
                                  f"above stopped with NotImplementedError): solve {exercise}, run the cells from it "
                                  f"down to here, then this one.")
