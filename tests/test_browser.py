"""The built book in headless Chromium at 1280×800: every page of the table of contents loads without console
errors, its images load, its tables fit, math renders, internal links resolve, and Colab opens the source notebook.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in NUL on
file descriptors 3 and 4), so no websocket client or browser driver is needed. The book is the one tests/test_book.py
builds, or an existing build: `TRADEOFFS_BOOK_HTML=_build/html` (its `_toc.yml` one folder up, as `make html` leaves
it). Screenshots of the verdicts page and a claim page land in `_build/screenshots/`.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

from tradeoffs import bookpages

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "_build" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # the book must work offline
         f"--window-size={VIEWPORT['width']},{VIEWPORT['height']}", "--remote-debugging-pipe")


def in_browser(test: Any) -> Any:
    """Marks a test that builds the book and opens it in Chromium (`browser`, `slow`)."""
    return pytest.mark.browser(pytest.mark.slow(test))


def browser_binary() -> str | None:
    """`CHROMIUM` if set, else the first Chromium or Chrome on PATH."""
    return os.environ.get("CHROMIUM") or next((b for b in map(shutil.which, BROWSERS) if b), None)


def _above_4(fd: int) -> int:
    """The same pipe end on a descriptor above 4, so that redirecting onto 3 and 4 cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """A headless Chromium and one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60) -> None:
        to_browser_r, self._to_browser = map(_above_4, os.pipe())
        self._from_browser, from_browser_w = map(_above_4, os.pipe())
        shell = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'  # the pipe must be fds 3 (in) and 4 (out)
        self.log = profile / "chromium.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(["bash", "-c", shell, binary, *FLAGS, f"--user-data-dir={profile}",
                                             "about:blank"], pass_fds=(to_browser_r, from_browser_w),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.timeout, self.events, self._buffer, self._id = timeout, [], b"", 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=self.session)
        self._viewport(VIEWPORT["height"])

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise ConnectionError(f"Chromium exited (code {self.process.wait()}):\n{tail}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept in `events`."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {},
                   **({"sessionId": session} if session else {})}
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._message(deadline))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> list[str]:
        """Load `url`, wait for the load event, images and MathJax; return the console errors it caused."""
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=self.session)
        self.wait_for("Page.loadEventFired")
        self.evaluate("Promise.all([...document.images].map(i => { i.loading = 'eager'; "
                      "return i.decode().catch(() => 0) }))"
                      ".then(() => window.MathJax && MathJax.startup ? MathJax.startup.promise : 0).then(() => 1)")
        return console_errors(self.events)

    def _viewport(self, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", {**VIEWPORT, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=self.session)

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        """The 1280×800 viewport, or the whole page at 1280 px wide (the viewport grown to the page's height)."""
        if full_page:
            self._viewport(min(self.evaluate("document.documentElement.scrollHeight"), 16000))
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"]
        self._viewport(VIEWPORT["height"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """Stop this browser and its helper processes (its own process group)."""
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)


def console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads among DevTools events, one line each."""
    errors = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif (method == "Log.entryAdded" and params["entry"]["level"] == "error"
              and not params["entry"].get("url", "").endswith("/favicon.ico")):  # the browser's own request
            errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip())
    return errors


class Links(HTMLParser):
    """The `href`/`src` targets and element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)
            elif name in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def broken_links(html: Path, page: Path) -> list[str]:
    """Internal links of `page` whose file, or whose #fragment in an HTML file, does not exist."""
    broken = []
    base = "file://" + page.as_posix()
    for target in parse(page).targets:
        parts = urlsplit(urljoin(base, target))
        if parts.scheme != "file" or target.startswith(("//", "mailto:", "javascript:", "data:")):
            continue
        path = Path(unquote(parts.path))
        path = path / "index.html" if path.is_dir() else path
        if not path.resolve().is_relative_to(html.resolve()):
            broken.append(f"{target} (outside the site)")
        elif not path.is_file():
            broken.append(target)
        elif parts.fragment and path.suffix == ".html" and unquote(parts.fragment) not in parse(path).ids:
            broken.append(f"{target} (no such anchor)")
    return broken


OVERFLOW_JS = """[...document.querySelectorAll('table')].filter(t => {
  let box = t.parentElement;
  while (box && !['auto', 'scroll', 'hidden'].includes(getComputedStyle(box).overflowX)
         && !box.matches('article, main')) box = box.parentElement;
  return box && t.getBoundingClientRect().width > box.clientWidth + 1;
}).map(t => [...t.querySelectorAll('th')].map(th => th.textContent.trim()).filter(Boolean).slice(0, 3).join(' / '))"""


@dataclass(frozen=True)
class Site:
    html: Path
    pages: list[str]  # documents of the table of contents
    url: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The built book served on 127.0.0.1 (an ephemeral port) for the duration of the module."""
    if env := os.environ.get("TRADEOFFS_BOOK_HTML"):
        html = Path(env).resolve()
        toc = yaml.safe_load((html.parent / "_toc.yml").read_text())
        pages = [toc["root"], *(c["file"] for part in toc["parts"] for c in part["chapters"])]
    else:
        from test_book import build_book

        built = build_book(tmp_path_factory)
        html, pages = built.html, built.pages()
    handler = functools.partial(Quiet, directory=str(html))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield Site(html, pages, f"http://127.0.0.1:{server.server_address[1]}/")
        server.shutdown()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        """No request log on stderr."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    binary = browser_binary()
    if binary is None:
        message = "no Chromium on PATH (Debian: apt-get install chromium; or set CHROMIUM)"
        if os.environ.get("TRADEOFFS_BROWSER_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        chromium = Chromium(binary, Path(profile))
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass(frozen=True)
class Visit:
    errors: list[str]
    broken_images: list[str]
    overflowing_tables: list[str]
    page_overflow: bool
    math: int
    colab: list[str]
    no_alt: list[str]  # figures whose alt text is missing or only their file name


@pytest.fixture(scope="module")
def visits(site: Site, browser: Chromium) -> dict[str, Visit]:
    """Every page of the table of contents, opened once; screenshots of the verdicts page and a claim page."""
    found = {}
    claims = [p for p in site.pages if p.startswith(bookpages.EXECUTED + "/")]
    shots = {"book/verdicts": "verdicts", **({claims[0]: claims[0].rsplit("/", 1)[1]} if claims else {})}
    for page in site.pages:
        errors = browser.open(site.url + page + ".html")
        found[page] = Visit(
            errors=errors,
            broken_images=browser.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                                           ".map(i => i.getAttribute('src'))"),
            overflowing_tables=browser.evaluate(OVERFLOW_JS),
            page_overflow=browser.evaluate("document.documentElement.scrollWidth > window.innerWidth"),
            math=browser.evaluate("document.querySelectorAll('mjx-container').length"),
            colab=browser.evaluate("[...document.querySelectorAll('a[href*=\"colab.research.google.com\"]')]"
                                   ".map(a => a.href)"),
            no_alt=browser.evaluate("[...document.querySelectorAll('article img')].filter(i => !i.alt.trim() "
                                    "|| i.alt.includes('_images/')).map(i => i.getAttribute('src'))"))
        if page in shots:
            browser.screenshot(SCREENSHOTS / f"{shots[page]}.png")
            browser.screenshot(SCREENSHOTS / f"{shots[page]}-full.png", full_page=True)
    return found


@in_browser
def test_every_page_loads_without_console_errors(visits: dict[str, Visit]) -> None:
    bad = {page: v.errors for page, v in visits.items() if v.errors}
    assert not bad, f"console errors: {bad}"


@in_browser
def test_every_image_loads(visits: dict[str, Visit]) -> None:
    bad = {page: v.broken_images for page, v in visits.items() if v.broken_images}
    assert not bad, f"images that did not load: {bad}"


@in_browser
def test_nothing_overflows_at_1280(visits: dict[str, Visit]) -> None:
    tables = {page: v.overflowing_tables for page, v in visits.items() if v.overflowing_tables}
    wide = [page for page, v in visits.items() if v.page_overflow]
    assert not tables and not wide, (f"at 1280×800, tables that scroll sideways (by their first headers): {tables}; "
                                     f"pages wider than the viewport: {wide}")


@in_browser
def test_figures_have_alt_text(visits: dict[str, Visit]) -> None:
    """A figure's alt text says what it shows (notebooks: cell metadata `mystnb: {image: {alt: ...}}`)."""
    bad = {page: v.no_alt for page, v in visits.items() if v.no_alt}
    assert not bad, f"figures without alt text (myst-nb writes the file name): {bad}"


@in_browser
def test_math_renders(visits: dict[str, Visit]) -> None:
    assert visits["book/intro"].math > 0, "MathJax rendered no mjx-container on the intro page"


@in_browser
def test_verdicts_page_lists_every_claim(site: Site, visits: dict[str, Visit]) -> None:
    assert "book/verdicts" in site.pages
    assert (SCREENSHOTS / "verdicts.png").is_file()
    text = (site.html / "book" / "verdicts.html").read_text(encoding="utf-8")
    for claim in bookpages.CLAIMS:
        assert bookpages.TITLES[claim] in text


@in_browser
def test_internal_links_resolve(site: Site) -> None:
    bad = {page: b for page in site.pages if (b := broken_links(site.html, site.html / f"{page}.html"))}
    assert not bad, f"internal links that do not resolve: {bad}"


@in_browser
def test_claim_pages_open_their_notebook_on_colab(site: Site, visits: dict[str, Visit]) -> None:
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    repository, branch = config["repository"]["url"].rstrip("/"), config["repository"].get("branch", "main")
    github = repository.removeprefix("https://github.com/")
    claims = [p for p in site.pages if p.startswith(bookpages.EXECUTED + "/")]
    assert claims, "no claim page in the table of contents"
    for page in claims:
        name = page.rsplit("/", 1)[1]
        expected = f"{config['launch_buttons']['colab_url']}/github/{github}/blob/{branch}/notebooks/{name}.ipynb"
        assert visits[page].colab == [expected], page
        if (REPO / bookpages.EXECUTED / f"{name}.ipynb").is_file():  # a real executed page, not the test's stand-in
            assert (REPO / "notebooks" / f"{name}.ipynb").is_file(), f"Colab would open missing notebooks/{name}.ipynb"


def test_broken_links_are_caught(tmp_path: Path) -> None:
    """The link checker itself: a missing file, a missing anchor and an escape from the site are reported."""
    (tmp_path / "a.html").write_text('<p id="here"></p><a href="b.html#nope">x</a><a href="a.html#here">y</a>'
                                     '<a href="missing.png">z</a><a href="../x.html">w</a>'
                                     '<a href="https://example.org/">e</a><a href="#here">h</a>')
    (tmp_path / "b.html").write_text('<p id="there"></p>')
    assert broken_links(tmp_path, tmp_path / "a.html") == ["b.html#nope (no such anchor)", "missing.png",
                                                           "../x.html (outside the site)"]


def test_console_errors_are_caught() -> None:
    events = [{"method": "Runtime.consoleAPICalled", "params": {"type": "error", "args": [{"value": "boom"}]}},
              {"method": "Runtime.consoleAPICalled", "params": {"type": "log", "args": [{"value": "fine"}]}},
              {"method": "Log.entryAdded", "params": {"entry": {"level": "error", "text": "404", "url": "x.png"}}},
              {"method": "Log.entryAdded", "params": {"entry": {"level": "error", "text": "404",
                                                                "url": "http://127.0.0.1:1/favicon.ico"}}},
              {"method": "Runtime.exceptionThrown",
               "params": {"exceptionDetails": {"text": "Uncaught", "exception": {"description": "E"}}}}]
    assert console_errors(events) == ["console: boom", "log: 404 x.png", "exception: E"]
