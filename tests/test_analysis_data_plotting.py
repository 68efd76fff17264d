import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.stats
import torch

from course_utils import fit_power_law, labelled_axes, load_digits_split, use_style


def test_power_law_recovers_exponent():
    x = np.array([1, 2, 4, 8, 16.0])
    fit = fit_power_law(x, 3.0 * x**-0.5)
    assert fit.slope == pytest.approx(-0.5)
    assert fit.coefficient == pytest.approx(3.0)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.predict(4.0) == pytest.approx(1.5)


def test_power_law_slope_error_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    x = np.array([16, 32, 64, 128, 256, 512.0])
    y = 2.0 * x**1.3 * np.exp(rng.normal(0, 0.1, x.size))
    fit = fit_power_law(x, y)
    ref = scipy.stats.linregress(np.log(x), np.log(y))
    assert (fit.slope, fit.slope_stderr) == pytest.approx((ref.slope, ref.stderr))
    half = scipy.stats.t.ppf(0.975, x.size - 2) * ref.stderr
    assert fit.slope_interval() == pytest.approx((ref.slope - half, ref.slope + half))
    assert fit.slope_text() == f"{ref.slope:.2f} ± {half:.2f}"


def test_power_law_interval_covers_the_true_slope_at_its_level():
    # 2,000 noisy fits with a known slope: the 95% interval must contain it about 95% of the time (binomial sd 0.5%)
    rng = np.random.default_rng(1)
    x = np.array([1, 2, 4, 8, 16.0])
    covered = 0
    for _ in range(2000):
        low, high = fit_power_law(x, 3.0 * x**0.7 * np.exp(rng.normal(0, 0.2, x.size))).slope_interval(0.95)
        covered += low <= 0.7 <= high
    assert 0.93 <= covered / 2000 <= 0.97, f"coverage {covered / 2000:.3f}, expected about 0.95"


def test_power_law_with_two_points_has_no_interval():
    fit = fit_power_law([1, 2], [3, 12])
    assert fit.slope == pytest.approx(2.0)
    assert fit.slope_interval() == (-np.inf, np.inf) and fit.slope_text() == "2.00"
    with pytest.raises(ValueError, match="level must lie in"):
        fit.slope_interval(1.5)


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
