"""`make book`: the executed notebooks as a static site, every page opened in headless Chromium."""
import functools
import http.server
import shutil
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import nbformat
import pytest

from tools import book
from tools.exercises import find_exercises
from tools.notebooks import NOTEBOOK_DIR, find_notebooks, read

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOTEBOOKS = find_notebooks(NOTEBOOK_DIR)


def executed_stand_in(folder: Path) -> Path:
    """Each notebook with outputs as `make run` leaves them, made without running it (minutes): every cell that
    draws gets a real PNG (one small matplotlib figure), every other code cell a line of text."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import base64

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    png = base64.b64encode(buffer.getvalue()).decode()
    folder.mkdir(parents=True, exist_ok=True)
    for path in NOTEBOOKS:
        nb = read(path)
        for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            cell.execution_count = n + 1
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
            if "plt.show()" in cell.source:
                cell.outputs.append(nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}))
        (folder / path.name).write_text(nbformat.writes(nb))
    return folder


def test_the_book_refuses_notebooks_that_were_not_run(tmp_path):
    with pytest.raises(book.BookError, match="run `make run` first"):
        book.executed_notebooks(tmp_path / "nowhere")
    folder = executed_stand_in(tmp_path / "executed")
    (folder / NOTEBOOKS[0].name).unlink()
    with pytest.raises(book.BookError, match=f"missing {NOTEBOOKS[0].name}"):
        book.executed_notebooks(folder)
    shutil.copy(NOTEBOOKS[0], folder / NOTEBOOKS[0].name)             # committed: no outputs
    with pytest.raises(book.BookError, match="never executed"):
        book.executed_notebooks(folder)


def test_a_page_marks_every_exercise_and_leaves_out_hidden_checks_and_wrong_answers():
    for path in NOTEBOOKS:
        nb = read(path)
        page = book.book_page(nb)
        text = "\n".join(c.source for c in page.cells if c.cell_type == "markdown")
        for ex in find_exercises(nb):
            assert f":::{{admonition}} Exercise {ex.id}" in text and f"Check of exercise {ex.id}" in text, (path.name, ex.id)
        assert not any(c.cell_type == "raw" or "hidden" in c.metadata.get("tags", []) for c in page.cells), path.name


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium; .ci/run installs it where it can)")
def test_every_page_of_the_book_loads_with_its_images_and_no_broken_internal_link(tmp_path):
    from playwright.sync_api import sync_playwright

    html = book.build(executed_stand_in(tmp_path / "executed"), tmp_path / "book")
    pages = sorted(p.name for p in html.glob("*.html") if p.stem in {n.stem for n in NOTEBOOKS} | {"index"})
    assert pages == sorted(["index.html"] + [f"{n.stem}.html" for n in NOTEBOOKS]), pages
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)      # port 0: the system picks a free one
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    problems, images_seen = [], 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page()
            checked = {}
            for name in pages:
                response = page.goto(base + name)
                if response is None or response.status != 200:
                    problems.append(f"{name}: HTTP {response.status if response else 'no response'}")
                    continue
                page.wait_for_load_state("load")
                images = page.locator("article img").evaluate_all(
                    "imgs => imgs.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
                images_seen += len(images)
                problems += [f"{name}: image {src} did not load" for src, ok in images if not ok]
                ids = set(page.locator("[id]").evaluate_all("els => els.map(e => e.id)"))
                for href in page.locator("a[href]").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
                    target = urljoin(base + name, href)
                    if urlparse(target).netloc != urlparse(base).netloc:
                        continue                                                 # GitHub, Colab: not ours
                    document, fragment = urldefrag(target)
                    if document == base + name and fragment and fragment not in ids:
                        problems.append(f"{name}: link #{fragment} names no element of the page")
                    if document not in checked:
                        checked[document] = page.request.get(document).status
                    if checked[document] != 200:
                        problems.append(f"{name}: link {href} -> HTTP {checked[document]}")
            browser.close()
    finally:
        server.shutdown()
    assert not problems, problems[:20]
    drawing = sum("plt.show()" in c.source for n in NOTEBOOKS for c in book.book_page(read(n)).cells if c.cell_type == "code")
    assert images_seen >= drawing > 20, (images_seen, drawing)                 # every plot of every page is there
