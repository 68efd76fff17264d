import pytest
import torch

from course_utils import environment_info, environment_report, measure_matmul_flops, measure_memory_bandwidth


def test_matmul_flops_is_plausible():
    flops = measure_matmul_flops("cpu", n=128, repeat=3)
    assert 1e6 < flops < 1e15  # any CPU of this century lands in here


def test_matmul_flops_bfloat16():
    assert measure_matmul_flops("cpu", dtype=torch.bfloat16, n=64, repeat=2) > 0


@pytest.mark.parametrize("n", [0, -5, 2.5, True])
def test_matmul_rejects_bad_size(n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        measure_matmul_flops("cpu", n=n)


def test_matmul_rejects_integer_dtype():
    with pytest.raises(TypeError, match="floating-point"):
        measure_matmul_flops("cpu", dtype=torch.int32, n=8)


def test_memory_bandwidth_is_plausible():
    bw = measure_memory_bandwidth("cpu", nbytes=1 << 22, repeat=3)
    assert 1e7 < bw < 1e13


def test_memory_bandwidth_rejects_tiny_buffer():
    with pytest.raises(ValueError, match="nbytes"):
        measure_memory_bandwidth("cpu", nbytes=2)


def test_environment_report_names_the_essentials():
    info = environment_info()
    for key in ("python", "torch", "numpy", "device", "torch threads", "cpu cores (os)"):
        assert info[key]
    assert info["torch"] == torch.__version__
    report = environment_report()
    assert len(report.splitlines()) == len(info)
    assert torch.__version__ in report
