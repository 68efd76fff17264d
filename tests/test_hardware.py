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


@pytest.mark.skipif(not __import__("os").path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_other_load_counts_cpu_spent_by_another_process_not_by_this_one():
    # A child that burns 0.5 s of CPU (by its own clock, however loaded the machine) inside the block: at least
    # that much is "other processes". Work of this process itself is never counted as other load.
    import subprocess
    import sys

    from course_utils import OtherLoad

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    with OtherLoad() as load:
        subprocess.run([sys.executable, "-c", burn], check=True)
    assert load.others * load.seconds >= 0.45, str(load)
    assert "cores" in str(load) and load.stolen >= 0


def test_other_load_subtracts_this_process_and_reports_steal(monkeypatch):
    # On a fake clock and a fake /proc/stat: 2 s elapse; the machine was busy 3 s of CPU (at 100 ticks/s), this
    # process used 1.5 s of it, and the hypervisor stole 0.4 s: others = 1.5 s / 2 s, stolen = 0.2 cores.
    from collections import namedtuple

    import course_utils.hardware as hw

    # Waited-for children used 0.5 s more: other processes' time unless own_children says they were this
    # measurement's own workers.
    T = namedtuple("T", "user system children_user children_system")
    monkeypatch.setattr(hw.os, "sysconf", lambda name: 100)
    for own_children, others in ((False, 0.75), (True, 0.5)):
        stats = iter([(1000, 50), (1300, 90)])
        times = iter([T(10.0, 1.0, 3.0, 0.0), T(11.0, 1.5, 3.4, 0.1)])
        clock = iter([100.0, 102.0])
        monkeypatch.setattr(hw.OtherLoad, "_stat", staticmethod(lambda: next(stats)))
        monkeypatch.setattr(hw.os, "times", lambda: next(times))
        monkeypatch.setattr(hw.time, "perf_counter", lambda: next(clock))
        with hw.OtherLoad(own_children=own_children) as load:
            pass
        assert (load.seconds, load.others, load.stolen) == pytest.approx((2.0, others, 0.2)), own_children
    assert str(load) == "other processes 0.5 cores, stolen by the hypervisor 0.2 cores"


def test_last_level_cache_is_the_highest_level_in_sysfs(tmp_path):
    from course_utils import last_level_cache_bytes

    for i, (level, size) in enumerate([("1", "32K"), ("1", "32K"), ("2", "512K"), ("3", "32768K")]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "level").write_text(level + "\n")
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    assert last_level_cache_bytes(str(tmp_path)) == 32 << 20
    (tmp_path / "index4").mkdir()                        # an unreadable entry is skipped, not guessed
    (tmp_path / "index4" / "level").write_text("4\n")
    (tmp_path / "index4" / "size").write_text("large\n")
    assert last_level_cache_bytes(str(tmp_path)) == 32 << 20
    assert last_level_cache_bytes(str(tmp_path / "missing")) == 0
