"""The dependency list has one source (requirements.txt); everything that installs must agree with it."""
import re
from pathlib import Path

import pytest
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


def test_install_hands_uv_what_pip_s_configuration_says():
    # `pip config list` prints merged settings per section; for `pip install`, [install] overrides [global] and PIP_*
    # variables (:env:) override both; another command's section does not apply
    from tools.install import pip_settings, uv_options

    listing = "\n".join([
        "global.find-links='/from/file'", ":env:.find-links='/opt/wheels /more/wheels'",
        "global.index-url='https://a.example/simple'", "install.index-url='https://b.example/simple'",
        "global.extra-index-url='file:///one file:///two'", "download.index-url='https://not-for-install/simple'",
        "global.constraint='/etc/constraints.txt'", "install.no-index='yes'", "global.cert='/etc/ca.pem'",
        "global.timeout='60'", "a line that is not a setting"])
    settings = pip_settings(listing)
    assert settings["find-links"] == "/opt/wheels /more/wheels" and settings["index-url"] == "https://b.example/simple"
    assert uv_options(settings) == ["--find-links", "/opt/wheels", "--find-links", "/more/wheels",
                                    "--extra-index-url", "file:///one", "--extra-index-url", "file:///two",
                                    "--constraint", "/etc/constraints.txt", "--index-url", "https://b.example/simple",
                                    "--no-index"]
    assert uv_options(pip_settings("")) == []
    with pytest.raises(ValueError, match="cannot read this line of `pip config list`"):
        pip_settings("global.find-links='/unclosed")


def test_install_runs_uv_with_pip_s_real_configuration_and_the_arguments_given(tmp_path, monkeypatch):
    # the pip of this environment reads a config file and PIP_* variables; a stand-in uv records what it was given
    import json
    import os
    import sys

    import tools.install as install

    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://mirror.example/simple\ncert = /etc/mirror-ca.pem\n"
                      "[install]\nconstraint = /etc/pinned.txt\n")
    for name in [n for n in os.environ if n.startswith("PIP_")]:      # this machine's own (PIP_CERT among them)
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("WORKBOOK_INSTALLER", raising=False)
    record = tmp_path / "argv.json"
    fake = tmp_path / "uv"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump([sys.argv[1:], os.environ.get('SSL_CERT_FILE')], open({str(record)!r}, 'w'))\n")
    fake.chmod(0o755)
    monkeypatch.setattr(install, "find_uv", lambda: fake)
    assert install.main(["--no-deps", "-e", "."]) == 0
    argv, cert = json.loads(record.read_text())
    assert argv[:4] == ["pip", "install", "--quiet", "--python"] and argv[4] == sys.executable, argv
    options = argv[5:]
    assert options[:2] == ["--index-strategy", "unsafe-best-match"], options      # pip's best match over every index
    assert options[-3:] == ["--no-deps", "-e", "."], options
    pairs = list(zip(options[2:-3:2], options[3:-3:2]))
    assert ("--find-links", str(tmp_path / "wheels")) in pairs and ("--constraint", "/etc/pinned.txt") in pairs, pairs
    assert ("--index-url", "https://mirror.example/simple") in pairs and cert == "/etc/mirror-ca.pem", (pairs, cert)


def test_the_makefile_installs_through_tools_install():
    setup = (ROOT / "Makefile").read_text().split("\n$(STAMP):")[1].split("\n\n")[0]
    assert "$(PY) -m tools.install -r requirements.txt" in setup and "$(PY) -m tools.install --no-deps -e ." in setup, setup


def test_install_stops_naming_the_problem_when_pip_cannot_read_its_configuration(tmp_path, monkeypatch):
    # uv would otherwise install without this machine's settings (torch from the default index: a CUDA build)
    import sys

    import tools.install as install

    broken = tmp_path / "pip.conf"
    broken.write_text("[global\nfind-links = /opt/wheels\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(broken))
    monkeypatch.delenv("WORKBOOK_INSTALLER", raising=False)
    monkeypatch.setattr(install, "find_uv", lambda: Path(sys.executable))      # never reached
    with pytest.raises(SystemExit, match="`pip config list` failed, so pip's settings cannot be handed to uv"):
        install.main(["-r", "requirements.txt"])
