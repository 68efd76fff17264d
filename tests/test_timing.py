import time

import pytest

from course_utils import BenchmarkResult, benchmark, format_seconds


def test_benchmark_counts_calls_and_measures_sleep():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)

    result = benchmark(fn, warmup=2, repeat=5, device="cpu")
    assert len(calls) == 7
    assert len(result.samples) == 5
    assert 0.009 < result.min <= result.median <= result.max < 0.5
    assert result.min <= result.mean <= result.max


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
