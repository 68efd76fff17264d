"""Finding and describing the workbook's notebooks."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOK_NAME = re.compile(r"^\d{2}_[a-z0-9_]+\.ipynb$")


def find_notebooks(target: str | Path) -> list[Path]:
    """The .ipynb files named by `target` (a file, or a folder searched non-recursively), sorted; never checkpoints."""
    path = Path(target)
    if path.is_file():
        if path.suffix != ".ipynb":
            raise ValueError(f"{path} is not a notebook (.ipynb)")
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.glob("*.ipynb") if not p.name.startswith("."))
        if not found:
            raise ValueError(f"no notebooks (*.ipynb) in {path}")
        return found
    raise FileNotFoundError(f"{path} does not exist")


def read(path: str | Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def title_of(nb: nbformat.NotebookNode) -> str:
    """The first level-1 markdown heading of a notebook."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    raise ValueError("notebook has no '# Title' heading")


def cell_tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def with_parameters(nb, parameters: dict | None):
    """A copy of `nb` with a cell tagged `injected-parameters` assigning `parameters`, placed right after the cell
    tagged `parameters` (what papermill does). None or {} returns an unchanged copy."""
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    if not parameters:
        return nb
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in cell_tags(c)), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged `parameters` to override")
    source = "# Parameters injected for a quick run\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    return nb


def quick_parameters(nb) -> dict:
    """The smaller parameters a notebook declares (metadata.workbook.quick_parameters) for runs that only need its
    exercise checks, not its full-size claims."""
    return dict((nb.metadata.get("workbook") or {}).get("quick_parameters") or {})


# The share of its budget a notebook may use on the reference machine (a 2-core CPU): 25% headroom for a busy
# laptop or CI runner.
BUDGET_TARGET = 0.75


def budget_seconds(nb) -> float:
    """A notebook's time budget at default parameters on a 2-core CPU (metadata.workbook.budget_seconds)."""
    value = (nb.metadata.get("workbook") or {}).get("budget_seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"metadata.workbook.budget_seconds must be a positive number of seconds, got {value!r}")
    return float(value)


def budget_flag(seconds: float, budget: float) -> str:
    """'' when within BUDGET_TARGET of the budget, else what is wrong."""
    if seconds > budget:
        return f"OVER BUDGET by {seconds - budget:.0f} s"
    if seconds > BUDGET_TARGET * budget:
        return f"under budget but above {BUDGET_TARGET:.0%} of it"
    return ""


def ipc_kernel_manager(socket_dir: str | Path, kernel_name: str = "python3", **options):
    """A Jupyter kernel manager whose kernel talks over Unix sockets in `socket_dir` instead of TCP ports. A kernel
    over TCP gets ports found free by binding port 0 and closing, which another process may take before the kernel
    binds them; Unix sockets have no such window (the tests run several at once). The path is absolute because the
    kernel may run in another folder than its client (a notebook's own folder)."""
    from jupyter_client.manager import KernelManager

    return KernelManager(kernel_name=kernel_name, transport="ipc", ip=str(Path(socket_dir).resolve() / "k"), **options)
