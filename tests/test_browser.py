"""The built book's HTML, and its pages opened offline at 1280×800 in the system Chromium (`CHROMIUM`, else `chromium`
on PATH; none: skip, or fail if `TRADEOFFS_BROWSER_REQUIRED`) under Playwright; screenshots in `_build/screenshots/`."""

import functools
import http.server
import os
import re
import shutil
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml
from playwright.sync_api import Browser, sync_playwright

from test_book import Built, build_book
from tradeoffs import bookpages

REPO = Path(__file__).resolve().parents[1]
LEAK = re.compile(r"\b\w*Warning: |(?<![\w.-])/(?:work|home|tmp|root)/|site-packages|Traceback \(most recent call")
CHECKS_JS = """async () => {  // alt text naming the image file is myst-nb's fallback, not a description
  const $$ = (selector, root = document) => [...root.querySelectorAll(selector)], src = i => i.getAttribute('src');
  await Promise.all($$('img').map(i => { i.loading = 'eager'; return i.decode().catch(() => 0) }));
  await (window.MathJax && MathJax.startup ? MathJax.startup.promise : 0);
  const box = e => !e || /auto|scroll|hidden/.test(getComputedStyle(e).overflowX) || e.matches('article, main') ? e
    : box(e.parentElement);  // the box that scrolls a table sideways, or the article
  const wide = $$('table').filter(t => t.offsetWidth > box(t.parentElement)?.clientWidth + 1)  // by their first headers
    .map(t => $$('th', t).map(h => h.textContent.trim()).filter(Boolean).slice(0, 3).join(' / '));
  return {math: $$('mjx-container').length, colab: $$('a[href*="colab.research.google.com"]').map(a => a.href),
    text: document.body.innerText, broken_images: $$('img').filter(i => !(i.complete && i.naturalWidth > 0)).map(src),
    images_without_alt: $$('article img').filter(i => !i.alt.trim() || i.alt.includes('_images/')).map(src),
    wider_than_1280: [...wide, ...(document.documentElement.scrollWidth > innerWidth ? ['the page itself'] : [])]}}"""


def visit(browser: Browser, origin: str, url: str, shot: str = "") -> dict[str, Any]:
    """Open `url`, blocking requests off `origin`; once images and MathJax are ready, shoot `shot`; what it found."""
    page, blocked = browser.new_page(viewport={"width": 1280, "height": 800}), []
    page.route(lambda u: not u.startswith(origin), lambda route: blocked.append(route.request.url) or route.abort())
    page.goto(url)
    checks = page.evaluate(CHECKS_JS)
    for suffix in ("", "-full") if shot else ():
        page.screenshot(path=REPO / "_build" / "screenshots" / f"{shot}{suffix}.png", full_page=bool(suffix))
    errors = [f"console: {m.text} {m.location['url']}".strip() for m in page.console_messages() if m.type == "error"]
    errors += [f"exception: {e}" for e in page.page_errors()]
    page.close()
    return {"console_errors": errors, "requests_off_the_server": blocked, **checks}


@functools.cache
def parse(path: Path) -> tuple[list[str], set[str]]:
    """The `href`/`src` targets and the element ids of one HTML file."""
    attrs: list[tuple[str, str | None]] = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, found: attrs.extend(found)  # type: ignore[method-assign]
    parser.feed(path.read_text(encoding="utf-8"))
    return [v for k, v in attrs if k in ("href", "src") and v], {v for k, v in attrs if k in ("id", "name") and v}


def broken_links(root: Path, page: Path) -> list[str]:
    """Internal links of `page` whose file, or whose #fragment in an HTML file, does not exist."""
    broken = []
    for target in parse(page)[0]:
        if (parts := urlsplit(urljoin(page.resolve().as_uri(), target))).scheme != "file" or target.startswith("//"):
            continue
        if not (path := Path(unquote(parts.path))).resolve().is_relative_to(root.resolve()):
            broken.append(f"{target} (outside the site)")
        elif not path.is_file():
            broken.append(target)
        elif parts.fragment and path.suffix == ".html" and unquote(parts.fragment) not in parse(path)[1]:
            broken.append(f"{target} (no such anchor)")
    return broken


def leaks(page: str) -> list[str]:
    """Python warnings, absolute filesystem paths and tracebacks in the markup or the text of an HTML page."""
    return sorted({t[m.start():m.end() + 40] for t in (page, re.sub("<[^>]+>", "", page)) for m in LEAK.finditer(t)})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (binary := shutil.which(name := os.environ.get("CHROMIUM", "chromium"))):
        (pytest.fail if os.environ.get("TRADEOFFS_BROWSER_REQUIRED") else pytest.skip)(
            f"no Chromium: {name!r} not found (Debian: apt-get install chromium; or set CHROMIUM to the browser)")
    with sync_playwright() as playwright:
        yield playwright.chromium.launch(executable_path=binary)


@pytest.fixture(scope="module")
def visits(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> dict[str, dict[str, Any]]:
    """Each page of the book test_book builds, or of `TRADEOFFS_BOOK_HTML` (its `_toc.yml` one folder up), checked."""
    env = os.environ.get("TRADEOFFS_BOOK_HTML")
    book = Built(Path(env).parent, Path(env)) if env else build_book(tmp_path_factory)
    found = {doc: {"broken_links": broken_links(book.html, html), "leaks": leaks(html.read_text(encoding="utf-8"))}
             for doc, html in ((doc, book.html / f"{doc}.html") for doc in book.pages())}
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=book.html)) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        origin = f"http://127.0.0.1:{server.server_address[1]}/"
        for doc in found:
            found[doc] |= visit(browser, origin, f"{origin}{doc}.html", shot=doc.split("/")[-1])
        server.shutdown()
    return found


@pytest.mark.browser
@pytest.mark.slow
class TestEveryPage:
    @pytest.mark.parametrize("key", ["console_errors", "requests_off_the_server", "broken_images", "wider_than_1280",
                                     "images_without_alt", "broken_links", "leaks"])
    def test_has_no(self, visits: dict[str, dict[str, Any]], key: str) -> None:
        assert not (bad := {doc: v[key] for doc, v in visits.items() if v[key]}), f"{key}: {bad}"

    def test_math_renders(self, visits: dict[str, dict[str, Any]]) -> None:
        assert visits["book/intro"]["math"] > 0, "MathJax rendered no mjx-container on the intro page"

    def test_verdicts_page_lists_every_claim(self, visits: dict[str, dict[str, Any]]) -> None:
        assert [c for c in bookpages.CLAIMS if bookpages.TITLES[c] not in visits["book/verdicts"]["text"]] == []

    def test_claim_pages_open_their_notebook_on_colab(self, visits: dict[str, dict[str, Any]]) -> None:
        config = yaml.safe_load((REPO / "_config.yml").read_text())
        github = config["repository"]["url"].rstrip("/").removeprefix("https://github.com/")
        blob = f"{config['launch_buttons']['colab_url']}/github/{github}/blob/{config['repository']['branch']}"
        names = {doc: doc.split("/")[-1] for doc in visits if doc.startswith(bookpages.EXECUTED + "/")}
        assert names and all((REPO / "notebooks" / f"{n}.ipynb").is_file() for n in names.values()), names
        assert {d: visits[d]["colab"] for d in names} == {d: [f"{blob}/notebooks/{n}.ipynb"] for d, n in names.items()}


class TestTheChecksCatch:
    @pytest.mark.browser
    def test_console_errors_and_requests_off_the_server(self, browser: Browser) -> None:
        seen = visit(browser, "http://127.0.0.1:9/", "data:text/html,<script>console.log('ok'); console.error('boom');"
                     "throw Error('E')</script><img src='http://127.0.0.1:9/a'><img src='https://x.org/b'>")
        assert seen["requests_off_the_server"] == ["https://x.org/b"] and len(seen["broken_images"]) == 2
        assert sorted(e.split(" ")[1] for e in seen["console_errors"]) == ["E", "Failed", "Failed", "boom"], seen

    def test_broken_links(self, tmp_path: Path) -> None:
        (tmp_path / "b.html").write_text('<p id="there">')  # a.html: 3 broken links, then a good anchor and a URL
        (a := tmp_path / "a.html").write_text('<a href="b.html#nope"><a href="missing.png"><a href="../x">'
                                              '<a href="b.html#there"><a href="https://example.org/">')
        assert broken_links(tmp_path, a) == ["b.html#nope (no such anchor)", "missing.png", "../x (outside the site)"]

    def test_leaks(self) -> None:
        assert [t for t in ("x.py:3: <b>UserWarning</b>: slow", '<a href="file:///home/u/a.ipynb">', "cd /work/x",
                            "in /tmp/tmpab/src", "/root/.cache", "python3.11/site-packages/numpy", "Warning: x",
                            '<span class="ansi-red-fg">Traceback</span> (most recent call last)') if not leaks(t)] == []
        assert leaks('<p class="admonition-title">Warning</p><a href="https://example.org/home/tmp/">x</a>') == []
