"""The first lines of every notebook: install what the machine lacks (on Colab: course_utils and a few packages).

Each notebook's first code cell begins with a block written here from the notebook's own imports:
    * every third-party module the notebook imports, and the modules course_utils itself needs, at the version
      pinned in requirements.txt (the versions the workbook is tested with; a module not pinned there at the version
      installed next to them);
    * course_utils from the workbook's repository at the tag of its version (`v` + pyproject's version), never
      from whatever is newest, installed without its dependencies (they are in the list above);
    * torch never: Colab has its own (CUDA) build, which a reinstall would replace.
At run time the block installs only the modules it cannot find, so on a machine set up with `make setup` it does
nothing. `python -m tools.colab --write` rewrites the blocks; `--check` exits 1 when one is stale (a test does too).
"""
from __future__ import annotations

import argparse
import ast
import importlib.metadata
import re
import sys
import tomllib

from .notebooks import NOTEBOOK_DIR, ROOT, find_notebooks, read
from .readme import repository_url

HEADER = "# Setup: install what this machine lacks"
NEVER = {"torch"}                              # Colab's own build stays
# What Colab has preinstalled (what the test's clean environment holds, with their dependencies).
COLAB_PREINSTALLED = ("torch", "numpy", "scipy", "matplotlib", "scikit-learn", "pandas", "tqdm", "psutil")


def workbook_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def workbook_requirement() -> str:
    return f"course_utils @ git+{repository_url()}@v{workbook_version()}"


def notebook_code(nb) -> str:
    """The code of every code cell, IPython magics and shell lines left out (they are not Python)."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines += [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
            lines.append("")
    return "\n".join(lines)


def imported_modules(source: str) -> set[str]:
    """The top-level names of every module that `source` imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normal(name)] = version.strip()
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _course_utils_needs() -> set[str]:
    """Import names of course_utils' own dependencies (pyproject's [project] dependencies)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    by_dist = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(_normal(dist), set()).add(module)
    names = {_normal(re.split(r"[<>=!~ ;\[]", d, 1)[0]) for d in deps} - NEVER
    # the distribution's own module where it has one (matplotlib, not pylab), else its first by name
    pick = lambda n, modules: n.replace("-", "_") if n.replace("-", "_") in modules else min(modules)
    return {pick(n, by_dist[n]) for n in names if n in by_dist}


def needs(nb) -> dict[str, str]:
    """module -> the requirement that installs it, for every module the notebook (or course_utils) imports that is
    a distribution's, torch excepted; course_utils first."""
    modules = (imported_modules(notebook_code(nb)) | _course_utils_needs()) - set(sys.stdlib_module_names) - NEVER
    dists = importlib.metadata.packages_distributions()
    pins = _pins()
    found = {"course_utils": workbook_requirement()}
    for module in sorted(modules - {"course_utils"}):
        dist = (dists.get(module) or [None])[0]
        if dist is None or _normal(dist) in NEVER:
            continue                           # a file the notebook writes (05's common.py), or an optional extra
        version = pins.get(_normal(dist)) or importlib.metadata.version(dist)
        found[module] = f"{dist}=={version}"
    return found


def _closure(names) -> dict[str, str]:
    """normalized distribution name -> installed version, for `names` and everything they require (markers
    evaluated here; extras left out)."""
    from packaging.requirements import Requirement

    found, todo = {}, [_normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue                           # not installed here (pandas): nothing of it to hold
        found[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_normal(req.name))
    return found


def colab_closure() -> dict[str, str]:
    """What a clean environment of Colab's preinstalled set holds: those distributions and their requirements."""
    return _closure(COLAB_PREINSTALLED)


def wheelhouse_requirements() -> list[str]:
    """Exact versions of what the setup blocks may install on top of Colab's set, and what building course_utils
    from its source needs (setuptools): the test's stand-in for the package index."""
    wanted = set()
    for path in find_notebooks(NOTEBOOK_DIR):
        wanted |= {spec.split("==")[0] for spec in needs(read(path)).values() if "==" in spec}
    extra = _closure(wanted | {"setuptools"})
    colab = colab_closure()
    return sorted(f"{name}=={version}" for name, version in extra.items() if name not in colab or name == "setuptools")


def setup_block(nb) -> str:
    listed = ",\n         ".join(f"{k!r}: {v!r}".replace("'", '"') for k, v in needs(nb).items())
    return (f"{HEADER} (on Colab: course_utils and what Colab lacks), at the versions the\n"
            f"# workbook is tested with; course_utils from its release v{workbook_version()}. What is installed already is left\n"
            "# alone, and so is torch (Colab's own build). Written by `python -m tools.colab --write`.\n"
            "import importlib, importlib.util, subprocess, sys\n"
            f"NEEDS = {{{listed}}}\n"
            "missing = [spec for module, spec in NEEDS.items() if importlib.util.find_spec(module) is None]\n"
            "if missing:\n"
            "    print(\"installing:\", \", \".join(missing))\n"
            "    packages = [spec for spec in missing if not spec.startswith(\"course_utils \")]\n"
            "    if packages:\n"
            "        subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", *packages], check=True)\n"
            "    if packages != missing:                 # its dependencies are in NEEDS: never let pip pick a torch\n"
            "        subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"--no-deps\", NEEDS[\"course_utils\"]], check=True)\n"
            "    importlib.invalidate_caches()\n")


def setup_cell(nb):
    """The notebook's first code cell (which begins with the setup block)."""
    return next(c for c in nb.cells if c.cell_type == "code")


def current_block(source: str) -> str | None:
    """The setup block at the start of a cell's source: from HEADER to the first blank line."""
    if not source.startswith(HEADER):
        return None
    end = source.find("\n\n")
    return source if end < 0 else source[:end + 1]


def stale(paths=None) -> list[str]:
    out = []
    for path in paths or find_notebooks(NOTEBOOK_DIR):
        nb = read(path)
        if current_block(setup_cell(nb).source) != setup_block(nb):
            out.append(path.name)
    return out


def write(paths=None) -> list[str]:
    import nbformat

    changed = []
    for path in paths or find_notebooks(NOTEBOOK_DIR):
        nb = read(path)
        cell = setup_cell(nb)
        old = current_block(cell.source)
        if old is None:
            raise ValueError(f"{path.name}: its first code cell does not begin with {HEADER!r}")
        new = setup_block(nb)
        if old != new:
            cell.source = new + cell.source[len(old):]
            path.write_text(nbformat.writes(nb) + "\n")
            changed.append(path.name)
    return changed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite each notebook's setup block")
    group.add_argument("--check", action="store_true", help="exit 1 when a setup block is stale")
    group.add_argument("--wheelhouse", metavar="DIR", help="download (pip) the wheels the setup blocks may install on "
                       "top of Colab's set into DIR, for the test that runs them without a network")
    args = parser.parse_args(argv)
    if args.wheelhouse:
        import subprocess

        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--only-binary=:all:", "-d", args.wheelhouse, *wheelhouse_requirements()], check=True)
    elif args.write:
        print("rewrote:", ", ".join(write()) or "nothing")
    else:
        bad = stale()
        if bad:
            sys.exit(f"stale setup blocks (run python -m tools.colab --write): {', '.join(bad)}")
        print("setup blocks up to date")


if __name__ == "__main__":
    main()
