"""tools.bytecode: `make setup` writes the bytecode of what sandboxed kernels and workers import (they cannot)."""
import os
import subprocess
import sys

from tests.nbfactory import code, notebook, write
from tools.bytecode import modules, notebook_imports
from tools.notebooks import ROOT


def test_the_list_holds_the_kernel_the_zygote_and_each_notebook_s_installed_imports(tmp_path):
    from course_utils.zygote import PRELOAD

    nb = notebook(code("import numpy as np\nfrom course_utils import check_equal\nimport notebook_functions\n"
                       "from . import sibling\nimport torch.distributed as dist"),
                  code("%%writefile x.py\nimport scipy"), code("!pip install optuna\nimport math"))
    # the file a cell writes is imported by the workers: its imports count; the notebook's own modules do not
    assert notebook_imports([write(nb, tmp_path / "00_toy.ipynb")]) == ["course_utils", "math", "numpy", "scipy",
                                                                         "torch.distributed"]
    listed = modules([tmp_path / "00_toy.ipynb"])
    assert {"ipykernel.kernelapp", "torch._dynamo", "torch.distributed.optim", *PRELOAD} <= set(listed)
    assert len(listed) == len(set(listed))


def run(*args, prefix):
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run([sys.executable, "-m", "tools.bytecode", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_it_writes_the_bytecode_of_what_it_imports_and_names_what_it_could_not(tmp_path):
    # a bytecode prefix of its own: only what this run compiles lands there
    done = run("tools.teeth", prefix=tmp_path / "pyc")
    assert done.returncode == 0, done.stdout + done.stderr
    written = {p.name for p in (tmp_path / "pyc").rglob("*.pyc")}
    assert any(name.startswith("teeth.") for name in written), sorted(written)[:20]
    missing = run("no_such_module_here", prefix=tmp_path / "pyc2")
    assert missing.returncode == 1 and "could not import: no_such_module_here (ModuleNotFoundError" in missing.stdout, \
        missing.stdout
