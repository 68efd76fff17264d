"""The dependency list has one source (requirements.txt); everything that installs must agree with it."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_requirements_txt():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict)]
    assert pip_sections == [["-r requirements.txt"]], "environment.yml must pip-install requirements.txt and nothing else"
    conda_names = sorted(re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str))
    assert conda_names == ["pip", "python"], f"conda would install packages outside requirements.txt: {conda_names}"


def test_requirements_are_pinned():
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [l for l in lines if l]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", r) for r in reqs), reqs
    assert any(r.startswith("torch==") for r in reqs)


def test_makefile_reads_torch_pin_from_requirements():
    assert "grep -E '^torch==' requirements.txt" in (ROOT / "Makefile").read_text()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci.splitlines()[-1]
    assert "make test" in readme and "make run" in readme


def pins():
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    return {name.lower().replace("_", "-"): version for name, version in (l.split("==") for l in lines if l)}


def test_pyproject_s_loose_dependencies_admit_the_pinned_versions():
    # pyproject.toml stays loose (Colab installs course_utils beside its own torch), but never so far from
    # requirements.txt that the tested versions would not satisfy it
    import tomllib

    from packaging.requirements import Requirement

    pinned = pins()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"pyproject.toml depends on {name}, which requirements.txt does not pin"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{text} excludes the pinned {name}=={pinned[name]}"


def test_jupyterlab_is_pinned_and_make_lab_uses_it():
    assert "jupyterlab" in pins(), "make lab must start the pinned JupyterLab, not whatever is newest"
    lab = (ROOT / "Makefile").read_text().split("\nlab:")[1].split("\n\n")[0]
    assert "pip install" not in lab and "jupyter lab" in lab, f"make lab must start the pinned JupyterLab and install nothing: {lab!r}"
