import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_utils import fit_power_law, labelled_axes, load_digits_split, use_style


def test_power_law_recovers_exponent():
    x = np.array([1, 2, 4, 8, 16.0])
    fit = fit_power_law(x, 3.0 * x**-0.5)
    assert fit.slope == pytest.approx(-0.5)
    assert fit.coefficient == pytest.approx(3.0)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.predict(4.0) == pytest.approx(1.5)


@pytest.mark.parametrize("x,y,match", [
    ([1, 2], [1, 2, 3], "same length"),
    ([1, 1], [1, 2], "two distinct"),
    ([1, 2], [1, -2], "positive"),
    ([0, 2], [1, 2], "positive"),
    ([1, np.nan], [1, 2], "finite"),
])
def test_power_law_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y)


def test_digits_split_is_standardised_and_stratified():
    split = load_digits_split(test_fraction=0.25, seed=0)
    assert split.X_train.shape[1] == split.num_features == 64
    assert split.num_classes == 10
    assert split.X_train.shape[0] + split.X_test.shape[0] == 1797
    assert split.X_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.X_train.mean().abs() < 1e-5
    assert torch.bincount(split.y_test).min() >= 40
    again = load_digits_split(test_fraction=0.25, seed=0, dtype=torch.float64)
    assert torch.equal(again.y_train, split.y_train)


def test_digits_split_bad_input():
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.0)
    with pytest.raises(TypeError, match="dtype"):
        load_digits_split(dtype=torch.int64)


def test_labelled_axes():
    use_style()
    ax = labelled_axes("batch size B", "time [s]", title="t", logx=True)
    assert ax.get_xlabel() == "batch size B" and ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    with pytest.raises(ValueError, match="ylabel must be a non-empty string"):
        labelled_axes("x", " ")
    plt.close("all")
