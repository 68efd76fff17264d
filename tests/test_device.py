import random

import numpy as np
import pytest
import torch

import course_utils as cu
from course_utils import get_device, is_available, seed_everything, synchronize
from course_utils.device import DEVICE_ENV_VAR


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV_VAR, raising=False)


def test_default_is_best_available():
    expected = "cuda" if torch.cuda.is_available() else "mps" if is_available("mps") else "cpu"
    assert get_device().type == expected


def test_prefer_cpu_and_env_var(monkeypatch):
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(" CPU ") == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV_VAR, "cpu")
    assert get_device() == torch.device("cpu")


def test_prefer_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "tpu")
    assert get_device("cpu").type == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", ""])
def test_unknown_name_is_value_error(name):
    with pytest.raises(ValueError, match="unknown device"):
        get_device(name)


def test_unknown_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "tpu")
    with pytest.raises(ValueError, match=r"\$COURSE_DEVICE"):
        get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_value_error():
    with pytest.raises(ValueError, match="not available on this machine; available: .*cpu"):
        get_device("cuda")


def test_wrong_type_is_type_error():
    with pytest.raises(TypeError):
        get_device(0)


def test_is_available_rejects_unknown():
    assert is_available("cpu")
    with pytest.raises(ValueError):
        is_available("tpu")


def test_synchronize_accepts_any_device():
    synchronize()
    synchronize("cpu")
    synchronize(torch.device("cpu"))


def test_seed_everything_makes_all_generators_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    assert seed_everything(123) == 123
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


@pytest.mark.parametrize("bad", [1.5, "3", None, True])
def test_seed_rejects_non_integers(bad):
    with pytest.raises(TypeError, match="non-negative integer"):
        seed_everything(bad)


@pytest.mark.parametrize("bad", [-1, 2**32])
def test_seed_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="seed must lie in"):
        seed_everything(bad)


def test_seed_accepts_numpy_integer():
    assert seed_everything(np.int64(7)) == 7


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_autocast_dtype_follows_the_gpus_capability_not_emulation(monkeypatch, capability, expected):
    # A T4 (7.5) reports is_bf16_supported() True through emulation; it must still get float16.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    got = cu.autocast_dtype("cuda")
    assert got == expected, f"compute capability {capability}: expected {expected}, got {got}"


def test_autocast_dtype_on_cpu_and_mps_and_bad_input():
    assert cu.autocast_dtype("cpu") == torch.bfloat16
    assert cu.autocast_dtype(torch.device("mps")) == torch.float16
    with pytest.raises(ValueError, match="no autocast dtype known for device type 'meta'"):
        cu.autocast_dtype("meta")
