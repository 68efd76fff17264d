"""`import course_utils` is cheap, and every public name and submodule is still there on first use."""
import subprocess
import sys
from pathlib import Path

import pytest

import course_utils as cu

PACKAGE = Path(cu.__file__).parent


def test_importing_the_package_loads_neither_torch_nor_matplotlib():
    code = ("import sys, course_utils, course_utils.worker_entry\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split("\n")[0] == "[]", f"importing course_utils loaded {done.stdout.strip()}"


def test_every_public_name_comes_from_the_module_that_defines_it():
    for name in cu.__all__:
        value = getattr(cu, name)
        assert value.__module__ == f"course_utils.{cu._HOME[name]}", (name, value.__module__)
    assert set(cu.__all__) <= set(dir(cu))


def test_the_submodule_list_names_every_module():
    assert set(cu._SUBMODULES) == {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "torchrun_driver", "worker_entry"}


def test_submodules_load_on_attribute_access_and_unknown_names_are_named():
    assert cu.gpt.Block.__module__ == "course_utils.gpt"
    with pytest.raises(AttributeError, match="no attribute 'asert_close'"):
        cu.asert_close
