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
