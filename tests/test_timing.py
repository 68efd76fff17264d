import time

import pytest

from course_utils import BenchmarkResult, benchmark, format_seconds


def test_benchmark_counts_calls_and_times_only_the_timed_calls(monkeypatch):
    # A fake clock, so the test cannot depend on the machine's load: call k takes k ticks of 1 ms.
    import course_utils.timing as timing

    now = [0.0]
    calls = []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def fn():
        calls.append(1)
        now[0] += 1e-3 * len(calls)

    result = benchmark(fn, warmup=2, repeat=5, device="cpu")
    assert len(calls) == 7
    assert result.samples == pytest.approx((3e-3, 4e-3, 5e-3, 6e-3, 7e-3))   # the 2 warmup calls are not timed
    assert (result.min, result.median, result.max) == pytest.approx((3e-3, 5e-3, 7e-3))


def test_benchmark_measures_real_time_from_below():
    # sleep() lasts at least its argument on any machine; no upper bound is asserted (that would be a timing test)
    result = benchmark(lambda: time.sleep(0.01), warmup=1, repeat=3, device="cpu")
    assert len(result.samples) == 3 and result.min >= 0.0095


def test_result_summaries():
    r = BenchmarkResult((3.0, 1.0, 2.0))
    assert (r.median, r.min, r.max, r.mean) == (2.0, 1.0, 3.0, 2.0)
    assert "2 s median" in str(r)


@pytest.mark.parametrize("repeat", [0, -3])
def test_repeat_below_one_is_value_error(repeat):
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        benchmark(lambda: None, repeat=repeat)


def test_negative_warmup_and_bad_types():
    with pytest.raises(ValueError, match="warmup"):
        benchmark(lambda: None, warmup=-1)
    with pytest.raises(TypeError, match="repeat must be an integer"):
        benchmark(lambda: None, repeat=2.5)
    with pytest.raises(TypeError, match="callable"):
        benchmark(42)


def test_format_seconds():
    assert format_seconds(1.25) == "1.25 s"
    assert format_seconds(0.0032) == "3.2 ms"
    assert format_seconds(4.1e-5) == "41 µs"
    assert format_seconds(5e-9) == "5 ns"


def test_max_seconds_stops_a_slow_benchmark_early_but_keeps_a_spread(monkeypatch):
    import course_utils.timing as timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def slow():
        now[0] += 2.0                                   # every call takes 2 s on the fake clock

    assert len(benchmark(slow, warmup=0, repeat=10, max_seconds=5).samples) == 3      # 6 s >= 5 s after 3
    assert len(benchmark(slow, warmup=0, repeat=10, max_seconds=1).samples) == 3      # never fewer than min_repeat
    assert len(benchmark(slow, warmup=0, repeat=10, max_seconds=1, min_repeat=5).samples) == 5
    assert len(benchmark(slow, warmup=0, repeat=2, max_seconds=1).samples) == 2       # repeat still the most
    assert len(benchmark(slow, warmup=0, repeat=10).samples) == 10                    # no cap: repeat calls
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        benchmark(slow, max_seconds=0)


def test_interleaved_benchmark_runs_in_rounds_and_times_only_the_timed_rounds(monkeypatch):
    # A fake clock: each call of "a" takes 1 ms, of "b" 10 ms; the order of calls is recorded.
    import course_utils.timing as timing
    from course_utils import benchmark_interleaved

    now = [0.0]
    order = []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def make(name, seconds):
        def fn():
            order.append(name)
            now[0] += seconds
        return fn

    results = benchmark_interleaved({"a": make("a", 1e-3), "b": make("b", 1e-2)}, warmup=1, repeat=3, device="cpu")
    assert order == ["a", "b"] * 4                      # round by round, not all of "a" then all of "b"
    assert results["a"].samples == pytest.approx((1e-3,) * 3)
    assert results["b"].samples == pytest.approx((1e-2,) * 3)


def test_interleaved_benchmark_spreads_a_slow_spell_over_every_case(monkeypatch):
    # The machine is 5x slower during the middle third of the calls: every case sees it in its max, and no case's
    # median is biased (run one case after another, the middle case would be 5x slower in full).
    import course_utils.timing as timing
    from course_utils import benchmark_interleaved

    now, calls = [0.0], [0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def fn():
        calls[0] += 1
        now[0] += 5e-3 if 6 < calls[0] <= 12 else 1e-3

    results = benchmark_interleaved({k: fn for k in "xyz"}, warmup=0, repeat=6, device="cpu")
    assert {k: r.median for k, r in results.items()} == pytest.approx({k: 1e-3 for k in "xyz"})
    assert all(r.max == pytest.approx(5e-3) for r in results.values())


@pytest.mark.parametrize("fns, error, message", [
    ({}, TypeError, "non-empty mapping"),
    ([lambda: None], TypeError, "non-empty mapping"),
    ({"a": 3}, TypeError, r"fns\['a'\] must be callable"),
])
def test_interleaved_benchmark_rejects_bad_input(fns, error, message):
    from course_utils import benchmark_interleaved

    with pytest.raises(error, match=message):
        benchmark_interleaved(fns)
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        benchmark_interleaved({"a": lambda: None}, repeat=0)


def test_median_interval_uses_the_binomial_order_statistics():
    from scipy.stats import binom

    from course_utils import median_interval

    for n in range(6, 40):
        xs = list(range(n, 0, -1))                       # unsorted on purpose: n, n-1, ..., 1
        lo, hi = median_interval(xs)
        j = int(lo)                                      # the j-th smallest of 1..n is j
        assert hi == n + 1 - j, f"n={n}: the interval must be symmetric in rank, got [{lo}, {hi}]"
        assert 1 - 2 * binom.cdf(j - 1, n, 0.5) >= 0.95, f"n={n}: [x_{j}, x_{n + 1 - j}] covers less than 95%"
        assert 1 - 2 * binom.cdf(j, n, 0.5) < 0.95, f"n={n}: j={j} is not the largest index that keeps 95%"
    assert median_interval([1.0] * 5) == (float("-inf"), float("inf"))   # 5 samples cannot give 95%
    with pytest.raises(ValueError, match="confidence must lie strictly between 0 and 1"):
        median_interval([1.0] * 10, confidence=1.0)


def test_median_interval_covers_the_median_of_a_skewed_distribution():
    # Timings are skewed (a long right tail): lognormal samples of 15; the true median is exp(0) = 1.
    import numpy as np

    from course_utils import median_interval

    rng = np.random.default_rng(0)
    covered = np.mean([lo <= 1.0 <= hi for lo, hi in (median_interval(rng.lognormal(0, 1, 15)) for _ in range(3000))])
    assert 0.95 - 0.013 <= covered <= 0.99, f"coverage {covered:.3f}; the exact coverage for n=15 is 0.965"


def test_stable_stops_once_the_median_is_pinned_down(monkeypatch):
    import course_utils.timing as timing
    from course_utils import benchmark_interleaved

    now, calls = [0.0], [0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def steady():
        now[0] += 1e-3

    def noisy():                                         # 1 ms and 3 ms in turn: the median never settles to 2%
        calls[0] += 1
        now[0] += 1e-3 if calls[0] % 2 else 3e-3

    assert len(benchmark(steady, warmup=0, repeat=50, stable=0.02).samples) == 6       # the first n with a 95% interval
    assert len(benchmark(noisy, warmup=0, repeat=50, stable=0.02).samples) == 50       # repeat is the most
    assert len(benchmark(noisy, warmup=0, repeat=50, stable=1.5).samples) == 6         # a loose target settles at once
    results = benchmark_interleaved({"a": steady, "b": steady}, warmup=1, repeat=50, stable=0.02)
    assert [len(r.samples) for r in results.values()] == [6, 6]
    results = benchmark_interleaved({"a": steady, "b": noisy}, warmup=1, repeat=20, stable=0.02)
    assert [len(r.samples) for r in results.values()] == [20, 20]                        # one unsettled case keeps all going
    with pytest.raises(ValueError, match="stable must be positive"):
        benchmark(steady, stable=0)
    with pytest.raises(ValueError, match="stable must be positive"):
        benchmark_interleaved({"a": steady}, stable=-1)
