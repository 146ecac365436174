"""Drive the map and the search page in headless Chromium (Selenium), and judge screenshots.

Shared by the browser tests and by ``make_screenshots.py`` (the README's pictures), so the
pictures come from the code path the tests check. Needs Debian's ``chromium`` and
``chromium-driver`` (``apt-get install -y chromium chromium-driver``) and ``selenium``.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image

INSTALL_HINT = (
    "headless Chromium is not installed: apt-get install -y chromium chromium-driver "
    "(and .venv/bin/pip install selenium)"
)
WINDOW = (1400, 900)
TIMEOUT = 60.0
_PLOT = "document.getElementById('clasp-map')"  # the map's plot <div> (viz.html.DIV_ID)  # seconds for a page to draw (software WebGL on a busy 2-core machine)


def chromium_paths() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` executables, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chrome(window: tuple[int, int] = WINDOW):
    """A headless Chromium session; WebGL runs in software (SwiftShader), no GPU needed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = Options()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_for(driver, script: str, timeout: float = TIMEOUT):
    """Run ``script`` (a JS function body returning a value) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"page never satisfied: {script}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Picture:
    """A screenshot and how much it varies.

    Attributes:
        png: the PNG bytes.
        std: standard deviation of its grey levels (0-255); a blank page has about 0.
        inked: fraction of pixels that are neither near-white nor near-grey (coloured marks).
    """

    png: bytes
    std: float
    inked: float

    def save(self, path: str | Path | None) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(self.png)


def picture(png: bytes) -> Picture:
    """Judge a PNG screenshot (:class:`Picture`)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    return Picture(png, float(rgb.mean(axis=2).std()), float((saturation > 40).mean()))


@dataclass(frozen=True)
class MapView:
    """What the map page holds once drawn: ``(trace name, point count)`` per trace, the hover
    label of the hovered point, and its expected hover fields."""

    traces: list[tuple[str, int]]
    hover_label: str
    hovered: list[str]
    shot: Picture


def open_map(driver, html: Path) -> MapView:
    """Open a ``clasp map`` file, hover the first point of the first trace (at its pixel, as a
    mouse would: WebGL traces ignore hovering by point number), take a screenshot."""
    driver.get(html.resolve().as_uri())
    wait_for(
        driver, f"const gd = {_PLOT}; return gd && gd._fullLayout && gd.data && gd.data.length;"
    )
    traces = driver.execute_script(f"return {_PLOT}.data.map(t => [t.name, t.x.length]);")
    driver.execute_script(
        f"const gd = {_PLOT}, layout = gd._fullLayout, trace = gd.data[0];"
        "const at = {xpx: layout.xaxis.d2p(trace.x[0]), ypx: layout.yaxis.d2p(trace.y[0])};"
        "Plotly.Fx.hover(gd, at, 'xy');"
    )
    label = wait_for(
        driver,
        "const h = document.querySelector('.hoverlayer .hovertext'); return h && h.textContent;",
    )
    hovered = driver.execute_script(f"return {_PLOT}._hoverdata[0].customdata;")
    return MapView(
        [tuple(t) for t in traces], label, hovered, picture(driver.get_screenshot_as_png())
    )


@dataclass(frozen=True)
class SearchView:
    """The search page after a query: table rows (cell texts), the structure shown in 3-D, and
    screenshots of the page and of the 3-D view."""

    rows: list[list[str]]
    shown: str
    canvases: int
    page: Picture
    viewer: Picture


def search_page(driver, url: str, query: str | None = None, cif: Path | None = None) -> SearchView:
    """Type ``query`` into the page at ``url`` and press Enter, or upload the file ``cif``; wait
    for the hits and the 3-D view of the first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url)
    wait_for(driver, "return document.body.dataset.ready === 'true';")
    if cif is None:
        box = driver.find_element(By.ID, "query")
        box.clear()
        box.send_keys(query, Keys.ENTER)
    else:
        driver.find_element(By.ID, "cif-file").send_keys(str(cif.resolve()))
    wait_for(driver, "return document.getElementById('results').dataset.count;")
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#results tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent));"
    )
    shown = wait_for(driver, "return document.getElementById('viewer').dataset.shown;")
    time.sleep(0.5)  # let WebGL present the frame before the screenshot
    canvases = driver.execute_script("return document.querySelectorAll('#viewer canvas').length;")
    page = picture(driver.get_screenshot_as_png())  # first: the element shot below scrolls
    viewer = picture(driver.find_element(By.ID, "viewer").screenshot_as_png)
    return SearchView(rows, shown, canvases, page, viewer)


def status_after_query(driver, url: str, query: str) -> str:
    """The status line of the page at ``url`` after submitting ``query`` (an error, say)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, "return document.body.dataset.ready === 'true';")
    driver.find_element(By.ID, "query").send_keys(query)
    driver.find_element(By.ID, "search-button").click()
    return wait_for(
        driver,
        "const s = document.getElementById('status'); return s.className === 'error' && s.textContent;",
    )
