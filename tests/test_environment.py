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
