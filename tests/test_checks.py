import numpy as np
import pytest
import torch

from course_utils import assert_close, check_that


def test_assert_close_passes_within_tolerance():
    assert_close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]))
    assert_close(3.0, 3.0)
    assert_close(torch.tensor([1.0], dtype=torch.bfloat16), [1.0])
    assert_close([float("nan"), 1.0], [float("nan"), 1.0])


def test_assert_close_reports_largest_error_and_where():
    actual = np.zeros((2, 3))
    expected = np.zeros((2, 3))
    expected[1, 2] = 0.5
    expected[0, 0] = 0.1
    with pytest.raises(AssertionError) as err:
        assert_close(actual, expected, name="grad", hint="check the sign")
    msg = str(err.value)
    assert "grad is not close" in msg and "2 of 6 entries off" in msg
    assert "largest error 0.5 at index (1, 2)" in msg
    assert "Hint: check the sign" in msg


def test_assert_close_shape_mismatch():
    with pytest.raises(AssertionError, match=r"shape \(3,\), expected shape \(2,\)"):
        assert_close(np.ones(3), np.ones(2))


def test_assert_close_none_means_missing_return():
    with pytest.raises(AssertionError, match="forget to `return`"):
        assert_close(None, 1.0)


def test_assert_close_nan_mismatch():
    with pytest.raises(AssertionError, match="NaN"):
        assert_close([float("nan")], [1.0])


def test_assert_close_compares_complex_values_with_their_imaginary_parts():
    # Cast to float64, a complex result kept only its real part: complex(right, 1e9) passed (red team, session 40).
    with pytest.raises(AssertionError, match=r"ratio is not close .* largest error 1e\+09"):
        assert_close(complex(2.0, 1e9), 2.0, name="ratio")
    with pytest.raises(AssertionError, match="largest error 1 at index \\(1,\\)"):
        assert_close(torch.tensor([1.0 + 0j, 2.0 + 1j]), np.array([1.0, 2.0]))
    with pytest.raises(AssertionError, match="largest error 1"):
        assert_close(np.array([3.0]), np.array([3.0 + 1j]))             # the other way round as well
    assert_close(np.array([1.0 + 0j, 2.0 + 1e-9j]), [1.0, 2.0])          # a complex dtype with parts within tolerance
    assert_close(torch.tensor([1.0 + 2j]), torch.tensor([1.0 + 2j]))


def test_assert_close_rejects_bad_tolerance_and_objects():
    with pytest.raises(ValueError):
        assert_close(1.0, 1.0, rtol=-1)
    # a result that is no number is the student's mistake: the check fails (AssertionError); an expected value
    # that is no number is the check's own mistake (TypeError)
    with pytest.raises(AssertionError, match="result must be a number, a list of numbers, a NumPy array or a torch tensor, got dict"):
        assert_close({"a": 1}, 1.0)
    with pytest.raises(AssertionError, match="result is None: did the function forget to `return`"):
        assert_close(None, 1.0)
    with pytest.raises(TypeError, match="expected must be a number"):
        assert_close(1.0, {"a": 1})


def test_check_that():
    check_that(True, "never shown")
    with pytest.raises(AssertionError, match="Check failed: loss falls. Expected: < 0.1. Got: 0.5.\nHint: lower the lr"):
        check_that(False, "loss falls", expected="< 0.1", got=0.5, hint="lower the lr")
    with pytest.raises(TypeError, match="must be a bool"):
        check_that(np.array([True, False]), "ambiguous")


def test_assert_close_runs_no_code_of_the_value_it_checks():
    # An answer that is an object of the student's class could run code while the check converts it (and, say,
    # walk up the stack to overwrite the expected value). Only numbers, lists, arrays and tensors are converted.
    import numpy as np
    import torch

    ran = []

    class Sneaky:
        def __array__(self, dtype=None, copy=None):
            ran.append("__array__")
            return np.array([2.0, 4.0])

        def detach(self):
            ran.append("detach")
            return torch.tensor([2.0, 4.0])

    with pytest.raises(AssertionError, match="got Sneaky"):
        assert_close(Sneaky(), [2.0, 4.0])
    assert ran == []

    class Tricky(torch.Tensor):
        def detach(self):
            ran.append("subclass detach")
            return torch.tensor([2.0, 4.0])

    with pytest.raises(AssertionError, match="not close"):
        assert_close(torch.tensor([0.0, 0.0]).as_subclass(Tricky), [2.0, 4.0])
    assert ran == [], "a tensor subclass's own detach ran"


def test_assert_close_is_not_fooled_by_numpy_patched_during_the_check(monkeypatch):
    import numpy as np

    def sneaky_answer():
        monkeypatch.setattr(np, "all", lambda *a, **k: True)     # what a student's function could do when called
        monkeypatch.setattr(np, "abs", lambda x: x * 0)
        return [1.0, 1.0]

    with pytest.raises(AssertionError, match="not close"):
        assert_close(sneaky_answer(), [2.0, 4.0])


def test_check_equal_compares_built_in_values_and_never_asks_an_object():
    from course_utils import check_equal, plain

    check_equal([(27, 1), (9, 3)], [(27, 1), (9, 3)], "rungs")
    with pytest.raises(AssertionError, match=r"Check failed: rungs. Expected: \[\(27, 1\)\]. Got: \[\(27, 2\)\]."):
        check_equal([(27, 2)], [(27, 1)], "rungs")

    class EqualToAnything:
        def __eq__(self, other):
            return True

        __ne__ = lambda self, other: False

    for sneaky in (EqualToAnything(), [EqualToAnything()], [(27, EqualToAnything())], {"a": EqualToAnything()}):
        with pytest.raises(AssertionError, match="got an object of type"):
            check_equal(sneaky, [(27, 1)] if not isinstance(sneaky, dict) else {"a": 1}, "rungs")

    class Int(int):                          # an int subclass may override == as well
        def __eq__(self, other):
            return True

    with pytest.raises(AssertionError, match="got an object of type Int"):
        check_equal(Int(3), 6, "double(3)")

    class SaysItIsInt(type):                 # red-team round 13: `type(x) in (int, ...)` asks the metaclass's __eq__
        def __eq__(cls, other):
            return other is int
        __hash__ = type.__hash__

    class Liar(int, metaclass=SaysItIsInt):
        def __eq__(self, other):
            return True
        __ne__ = lambda self, other: False
        __hash__ = int.__hash__

    for sneaky in (Liar(0), [Liar(0)], (Liar(0),)):
        with pytest.raises(AssertionError, match="got an object of type (Liar|list|tuple)"):
            check_equal(sneaky, 16 if type(sneaky) is Liar else [16] if type(sneaky) is list else (16,), "bytes")
    with pytest.raises(AssertionError, match="must be a tensor, an array, a number"):
        plain(Liar(0), "bytes")
    with pytest.raises(TypeError, match="the expected value is a object"):
        check_equal(1, object(), "bad check")


class _Liar(torch.Tensor):
    """A tensor subclass that answers every torch function (sum, ==, shape...) with what a check wants to hear."""
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return torch.tensor(True)


class _Dispatcher(torch.Tensor):
    """A wrapper subclass whose __torch_dispatch__ answers every operator, even the C methods, with ones."""
    @staticmethod
    def __new__(cls, like):
        return torch.Tensor._make_wrapper_subclass(cls, like.shape, dtype=like.dtype)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return torch.ones(3)


def test_plain_reads_a_tensor_subclass_as_its_data_and_refuses_what_it_cannot_read():
    from course_utils import plain

    liar = torch.zeros(3).as_subclass(_Liar)
    assert bool(liar == 5) and bool(torch.equal(liar, torch.ones(3)))        # what a check would otherwise see
    copy = plain(liar, "liar")
    assert type(copy) is torch.Tensor and torch.equal(copy, torch.zeros(3))
    copy += 1                                                                # a copy: the student's tensor is untouched
    assert torch.equal(torch.Tensor.as_subclass(liar, torch.Tensor), torch.zeros(3))
    with pytest.raises(AssertionError, match="intercepts PyTorch's dispatcher: return a plain torch.Tensor"):
        plain(_Dispatcher(torch.zeros(3)), "answer")
    with pytest.raises(AssertionError, match="intercepts PyTorch's dispatcher"):
        assert_close(_Dispatcher(torch.zeros(3)), torch.ones(3))             # it would claim to be all ones
    with pytest.raises(AssertionError, match="answer must be a tensor, an array, a number, or a tuple or list"):
        plain(object(), "answer")
    with pytest.raises(AssertionError, match=r"answer\[1\]\[0\] must be"):
        plain((1.0, [np.arange(3).view(np.matrix)]), "answer")               # an ndarray subclass, nested
    nested = plain((torch.ones(2, requires_grad=True), [np.float32(1.5), 2, "s", None]), "answer")
    assert type(nested) is tuple and not nested[0].requires_grad and type(nested[1][0]) is np.float32


class _NumpyLookalike(np.float64):
    """A student's subclass of a NumPy scalar that says it is NumPy's: its arithmetic is its own (red-team round 6:
    6 * N_opt * D_opt came out as whatever __rmul__ chose)."""
    __module__ = "numpy"

    def __rmul__(self, other):
        return np.float64(1e18)


def test_plain_refuses_a_numpy_scalar_subclass_that_claims_to_be_numpy_s():
    from course_utils import plain

    fake = _NumpyLookalike(1.0)
    assert 6 * fake == 1e18                                                  # what the check would compute with it
    with pytest.raises(AssertionError, match="got _NumpyLookalike"):
        plain(fake, "D_opt")
    with pytest.raises(AssertionError, match="must be a number, a list of numbers"):
        assert_close(fake, 1.0)
    for value in (np.float64(2.5), np.float32(1), np.int64(3), np.bool_(True), np.arange(3.0).sum(), np.complex128(1j)):
        assert type(plain(value)) is type(value) and plain(value) == value    # NumPy's own scalars pass as before


def test_assert_close_reads_tensors_through_c_methods_only(monkeypatch):
    # A function a check calls could patch torch.Tensor's Python methods for the moment the check reads its answer
    # (and remove the patch after): the helpers call torch._C.TensorBase's methods, which no patch reaches.
    monkeypatch.setattr(torch.Tensor, "numpy", lambda self, *a, **k: np.full(tuple(self.shape), 2.0))
    monkeypatch.setattr(torch.Tensor, "double", lambda self, *a, **k: torch.full(tuple(self.shape), 2.0, dtype=torch.float64))
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: torch._C.TensorBase.mul(self, 0))
    with pytest.raises(AssertionError, match="3 of 3 entries off"):
        assert_close(torch.ones(3), torch.full((3,), 2.0))


def test_needs_exercise_stops_a_cell_naming_the_unsolved_exercise():
    from course_utils import needs_exercise

    needs_exercise("ex00.2", True)                      # solved: the cell runs on
    with pytest.raises(NotImplementedError, match=r"exercise ex00.2 computes, and it is not solved yet.*solve ex00.2"):
        needs_exercise("ex00.2", False)
    with pytest.raises(ValueError, match="name the exercise"):
        needs_exercise("", False)
    with pytest.raises(TypeError, match="must be True or False"):
        needs_exercise("ex00.2", [])                    # a list would be read as its truth value: refused


def test_assert_close_matches_an_infinity_only_with_itself():
    # |5 - inf| <= atol + rtol * inf held, so any finite value passed where inf was expected (red team, session 42)
    inf = float("inf")
    assert_close(np.array([inf, -inf, 1.0]), np.array([inf, -inf, 1.0 + 1e-9]))
    for actual, expected in ((5.0, inf), (np.array([1.0, 5.0]), np.array([1.0, -inf])), (inf, 5.0), (-inf, inf)):
        with pytest.raises(AssertionError, match="not close to the expected value"):
            assert_close(actual, expected, name="x")
