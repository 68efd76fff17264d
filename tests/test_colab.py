"""Each notebook's first cell, as Colab runs it: in a clean environment of Colab's preinstalled set, with no
repository checked out and no network, it installs what is missing and every import of the notebook then works."""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import colab
from tools.notebooks import NOTEBOOK_DIR, ROOT, find_notebooks, read
from tools.readme import repository_url

NOTEBOOKS = [p.name for p in find_notebooks(NOTEBOOK_DIR)]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"


def notebooks_by_block() -> dict[str, list[str]]:
    """The notebooks grouped by their setup block's text: notebooks whose blocks are the same text install the
    same thing, so one clean environment runs that block and then every import of each of them."""
    groups: dict[str, list[str]] = {}
    for name in NOTEBOOKS:
        groups.setdefault(colab.current_block(colab.setup_cell(read(NOTEBOOK_DIR / name)).source), []).append(name)
    return groups


BLOCK_GROUPS = list(notebooks_by_block().values())


def test_every_setup_block_is_the_one_written_from_the_notebook_s_imports():
    assert colab.stale() == [], "run python -m tools.colab --write"
    for name in NOTEBOOKS:
        block = colab.current_block(colab.setup_cell(read(NOTEBOOK_DIR / name)).source)
        assert f"@v{colab.workbook_version()}" in block and repository_url() in block, block
        assert '"torch' not in block.split("NEEDS = ", 1)[1].split("}")[0], f"{name}: the setup block lists torch"


def test_a_changed_import_makes_the_block_stale(tmp_path):
    # the check above can fail: a notebook that starts importing a new package no longer matches its block
    import nbformat

    nb = read(NOTEBOOK_DIR / "00_why_scale.ipynb")
    nb.cells.append(nbformat.v4.new_code_cell("import optuna"))
    path = tmp_path / "00_why_scale.ipynb"
    path.write_text(nbformat.writes(nb))
    assert colab.stale([path]) == ["00_why_scale.ipynb"]
    assert '"optuna": "optuna==' in colab.setup_block(nb)


@pytest.fixture(scope="module")
def colab_like(tmp_path_factory):
    """Colab's preinstalled set (links to this checkout's installed copies, their dependencies included), a
    clone of the repository tagged with the workbook's version, and the wheels of everything else."""
    if not WHEELHOUSE.is_dir():
        pytest.fail(f"{WHEELHOUSE} is missing: `make setup` downloads it (python -m tools.colab --wheelhouse)")
    import importlib.metadata

    base = tmp_path_factory.mktemp("colab")
    site = base / "preinstalled"
    site.mkdir()
    for name in colab.colab_closure():
        dist = importlib.metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists() and top != "__pycache__":
                (site / top).symlink_to(source)
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "tag", f"v{colab.workbook_version()}"], check=True)
    # A bare virtual environment (Python and pip, as Colab's own has), made once: each test copies it, which takes
    # a fraction of a second where `python -m venv` takes about 5 s (it installs pip). Nothing runs in the template.
    template = base / "venv-template"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(template)], check=True)
    return site, clone, template


def imports_of(nb) -> list[str]:
    """Every import statement of the notebook whose module is installed here or in the standard library (05's
    files it writes itself and an optional extra such as torchao are left out)."""
    import importlib.util

    statements = []
    for node in ast.walk(ast.parse(colab.notebook_code(nb))):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not (isinstance(node, ast.ImportFrom) and node.level):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if all(importlib.util.find_spec(n.split(".")[0]) is not None for n in names):
                statements.append(ast.unparse(node))
    return sorted(set(statements))


# torch as the environment finds it, without importing it (an import takes 2 s): where its package is and which
# version its metadata says. The setup cell must leave both as they were.
TORCH_PROBE = ("import importlib.metadata, importlib.util\n"
               "print(importlib.util.find_spec('torch').origin, importlib.metadata.version('torch'))")


def test_notebooks_are_grouped_by_the_exact_text_of_their_setup_block():
    # every notebook is in exactly one group, and a group's blocks are one text (so the test below runs each)
    assert sorted(n for group in BLOCK_GROUPS for n in group) == sorted(NOTEBOOKS)
    blocks = notebooks_by_block()
    for block, group in blocks.items():
        assert {colab.current_block(colab.setup_cell(read(NOTEBOOK_DIR / n)).source) for n in group} == {block}
    assert len(blocks) == len(BLOCK_GROUPS) >= 2


@pytest.mark.parametrize("names", BLOCK_GROUPS, ids=["+".join(n.split("_")[0] for n in g) for g in BLOCK_GROUPS])
def test_the_setup_cell_installs_what_a_clean_colab_lacks_and_every_import_then_works(colab_like, tmp_path, names):
    site, clone, template = colab_like
    venv = tmp_path / "venv"
    shutil.copytree(template, venv, symlinks=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert purelib.startswith(str(venv)), purelib            # the copy is an environment of its own
    Path(purelib, "colab-preinstalled.pth").write_text(str(site) + "\n")
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(tmp_path), "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(WHEELHOUSE), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CONFIG_FILE": os.devnull,
           # the repository's URL, as git fetches it, is this clone (tagged like a release)
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.file://{clone}.insteadOf",
           "GIT_CONFIG_VALUE_0": repository_url()}
    notebooks = [read(NOTEBOOK_DIR / name) for name in names]
    block = colab.current_block(colab.setup_cell(notebooks[0]).source)
    torch_before = subprocess.run([python, "-c", TORCH_PROBE], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert torch_before.returncode == 0 and str(site) in torch_before.stdout, torch_before.stdout + torch_before.stderr
    first = subprocess.run([python, "-c", block], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "course_utils @ git+" in first.stdout, first.stdout      # it had to install course_utils: not there before
    torch_after = subprocess.run([python, "-c", TORCH_PROBE], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert torch_after.stdout == torch_before.stdout, "the setup cell replaced Colab's torch"
    # every import of each notebook of the group, in one process (their blocks are one text: they need one install)
    statements = sorted({s for nb in notebooks for s in imports_of(nb)})
    program = ("\n".join(statements) + "\nimport course_utils, torch\n"
               "print(course_utils.__file__, torch.__file__, torch.__version__)")
    done = subprocess.run([python, "-c", program], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cu_file, torch_file, torch_version = done.stdout.split()[-3:]
    assert cu_file.startswith(purelib) and not cu_file.startswith(str(ROOT)), cu_file   # installed, not this checkout
    assert torch_file == torch_before.stdout.split()[0], (torch_file, torch_before.stdout)
    again = subprocess.run([python, "-c", block], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert again.returncode == 0 and "installing" not in again.stdout, again.stdout    # what is there is left alone
