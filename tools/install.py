"""Install packages into the running Python's environment (`make setup`): with uv where it can be had, else with pip.

`python -m tools.install -r requirements.txt` and `python -m tools.install --no-deps -e .` take pip's install
arguments. uv installs this project's requirements in about 10 s where pip takes about 90 s (a fresh `make setup` on
the 2-core machine), most of `make test`'s install time. Both honour the same settings: uv is handed pip's own
configuration (`pip config list`: files and PIP_* variables), so a machine whose pip finds torch's CPU build in a
local folder or a mirror keeps doing so. Only the standard library is used: the environment may hold nothing yet.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

UV = "uv==0.13.9"                 # pinned like everything else; installed into the environment by pip
# pip settings whose uv counterpart is an option of `uv pip install` (a list of values: one option per value)
LISTED = {"find-links": "--find-links", "extra-index-url": "--extra-index-url", "constraint": "--constraint"}
SINGLE = {"index-url": "--index-url"}
FLAGS = {"no-index": "--no-index"}
# What `pip config list` prints is already merged over pip's files, per section; for `pip install` the [install]
# section overrides [global] and PIP_* variables (":env:") override both. Other commands' sections do not apply.
SOURCES = ("global", "install", ":env:")


def pip_settings(listing: str) -> dict[str, str]:
    """{setting: value} for `pip install` from `pip config list` output (lines `section.setting='value'`)."""
    found: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or "." not in key:
            continue
        source, _, name = key.rpartition(".")
        if source not in SOURCES:
            continue
        rank = SOURCES.index(source)
        try:
            value = " ".join(shlex.split(raw))
        except ValueError:
            raise ValueError(f"cannot read this line of `pip config list`: {line!r}") from None
        if name not in found or rank >= found[name][0]:
            found[name] = (rank, value)
    return {name: value for name, (_, value) in found.items()}


def uv_options(settings: dict[str, str]) -> list[str]:
    """The `uv pip install` options that say what the pip settings say."""
    options: list[str] = []
    for name, option in LISTED.items():
        for value in settings.get(name, "").split():
            options += [option, value]
    for name, option in SINGLE.items():
        if settings.get(name):
            options += [option, settings[name]]
    for name, option in FLAGS.items():
        if settings.get(name, "").lower() in ("1", "true", "yes", "on"):
            options.append(option)
    return options


def uv_environment(settings: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    if settings.get("cert") and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = settings["cert"]          # pip's CA bundle, for uv's TLS too
    return env


def pip(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--no-compile", *args])


def find_uv() -> Path | None:
    """uv in this environment, installed there by pip first if missing; None where pip cannot get it."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists() and pip([UV]) != 0:
        return None
    return uv if uv.exists() else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.exit("usage: python -m tools.install PIP-INSTALL-ARGUMENTS (e.g. -r requirements.txt)")
    uv = None if os.environ.get("WORKBOOK_INSTALLER") == "pip" else find_uv()
    if uv is None:
        print("tools.install: installing with pip (uv is not available here, or WORKBOOK_INSTALLER=pip)")
        return pip(args)
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    if listing.returncode != 0:                          # pip itself would not install with this configuration
        sys.exit(f"tools.install: `pip config list` failed, so pip's settings cannot be handed to uv:\n"
                 f"{listing.stderr.strip()}")
    settings = pip_settings(listing.stdout)
    # pip takes the best version any of its indexes offers; uv, by default, only the first index's that has the
    # package (this machine's local indexes hold some packages at other versions). Bytecode: as pip --no-compile,
    # uv leaves it to the first import (see the Makefile).
    return subprocess.call([str(uv), "pip", "install", "--quiet", "--python", sys.executable,
                            "--index-strategy", "unsafe-best-match", *uv_options(settings), *args],
                           env=uv_environment(settings))


if __name__ == "__main__":
    sys.exit(main())
