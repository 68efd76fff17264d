"""The student edition as a student sees it: JupyterLab (the pinned one, from the venv) in headless Chromium, every cell
of notebook 00 run through the user interface, then what the page shows and what the saved notebook holds."""
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tools.notebooks import NOTEBOOK_DIR, ROOT, quick_parameters, read, with_parameters

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run "
                                                           "installs it where it can)")
NOTEBOOK = "00_why_scale.ipynb"


def wait_for(condition, seconds, what):
    """Poll `condition` until it returns something true; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a port the system picks (port 0: no race for a free port), with a token, serving a folder that
    holds only the student notebook; the port comes from the server's own runtime file."""
    root, runtime, settings = tmp_path / "lab", tmp_path / "runtime", tmp_path / "settings"
    root.mkdir()
    # the student edition at its quick sizes (the parameters cell rewritten, as papermill does): the test is about
    # what the page and the saved notebook show, not about 00's measurements, which nbval runs at default sizes
    nbformat.write(with_parameters(read(ROOT / "student" / NOTEBOOK), quick_parameters(read(NOTEBOOK_DIR / NOTEBOOK))),
                   str(root / NOTEBOOK))
    # every cell in the page (no virtual scrolling), so the test sees each one; no news pop-up
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "IPYTHONDIR": str(tmp_path / "ipython"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                               "--ServerApp.port=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
                              + (["--allow-root"] if os.geteuid() == 0 else []),
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        info_file = wait_for(lambda: next(iter(runtime.glob(f"jpserver-{server.pid}.json")), None)
                             if server.poll() is None else pytest.fail((tmp_path / "lab.log").read_text()[-3000:]),
                             120, "JupyterLab's runtime file")
        info = wait_for(lambda: _json_or_none(info_file), 30, "a complete runtime file")
        yield f"http://127.0.0.1:{info['port']}/", token, root
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _saved_and_run(path):
    """The notebook on disk, once it holds outputs (the original has none)."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:                                      # half-written: read again
        return None
    return nb if any(c.get("outputs") for c in nb.cells if c.cell_type == "code") else None


def _json_or_none(path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def test_a_student_runs_notebook_00_cell_by_cell_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    url, token, root = lab
    nb = nbformat.read(root / NOTEBOOK, as_version=4)
    kinds = [c.cell_type for c in nb.cells]
    shot = ROOT / "build" / "lab-00_why_scale.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}lab/tree/{NOTEBOOK}?token={token}", timeout=120_000)
        cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
        expect(cells).to_have_count(len(kinds), timeout=120_000)
        # the status bar says Idle once the kernel is connected (the toolbar's indicator says idle before that, and
        # a cell run before the connection is dropped: seen in one run of two)
        expect(page.locator(".jp-StatusBar-Widget")).to_contain_text("(ipykernel) | Idle", timeout=120_000)
        for i, kind in enumerate(kinds):
            if kind != "code":
                continue
            cell = cells.nth(i)
            cell.locator(".jp-InputPrompt").click()             # select the cell, as a student does
            expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"))
            page.keyboard.press("Control+Enter")                # and run it
            expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"), timeout=300_000)   # [*] -> [n]
        images = page.locator(".jp-OutputArea-output img")
        loaded = images.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
        # tqdm's bar as ipywidgets draws it: a progress widget, filled to 100% when the loop finished
        bars = page.locator(".jp-OutputArea-output .widget-hprogress .progress-bar")
        bar_widths = bars.evaluate_all("bars => bars.map(b => b.style.width)")
        bars.first.scroll_into_view_if_needed()             # the screenshot: the bar, a plot above it
        page.mouse.wheel(0, -400)
        page.screenshot(path=str(shot))
        cells.nth(0).locator(".jp-InputPrompt, .jp-InputArea").first.click()
        page.keyboard.press("Control+s")                        # save, as a student does, and read what was saved
        saved = wait_for(lambda: _saved_and_run(root / NOTEBOOK), 60, "the notebook saved with its outputs")
        browser.close()
    code = [(i, c) for i, c in enumerate(saved.cells) if c.cell_type == "code"]
    assert all(c.execution_count for _, c in code), [i for i, c in code if not c.execution_count]
    errors = [(i, o.ename) for i, c in code for o in c.outputs if o.output_type == "error"]
    assert errors and all(name == "NotImplementedError" for _, name in errors), errors   # the stubs', nothing else
    stubbed = {i for i, c in code if any(t.startswith("check-") for t in c.metadata.get("tags", []))}
    assert stubbed <= {i for i, _ in errors}, "every check of a stubbed exercise fails with NotImplementedError"
    plots = sum(1 for _, c in code for o in c.outputs if "image/png" in o.get("data", {}))
    drawing = [i for i, c in code if "plt.show()" in c.source and not any(o.output_type == "error" for o in c.outputs)]
    assert plots == len(drawing) >= 3, (plots, drawing)                                 # every cell that draws, drew
    assert len(loaded) == plots and all(loaded), loaded                                 # and the page shows each image
    assert bar_widths == ["100%"], f"the gradient-descent progress bar, as a finished widget: {bar_widths}"
    assert shot.stat().st_size > 10_000
