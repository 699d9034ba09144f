"""The book types no measured number: every number in the hand-written prose (notebook markdown cells and the static
pages) is declared somewhere a reader can check — the claims and their papers' numbers (`tradeoffs.claims`), a
chapter's settings and named constants (`tradeoffs.chapters.*`), or the short list of constants below, each with its
reason. Numbers a page reports from results are produced by code from the stored files."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tradeoffs import claims, run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = run.notebooks(REPO / "notebooks")
STATIC = ("book/intro.md", "book/library.md")
NUMBER = re.compile(r"(?<![\w.\-/−$^_{×²])([−-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?![\w/×²]|\.\d)")
SKIP = [re.compile(p, re.S | re.M) for p in (
    r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"`[^`]*`", r"\{cite[^}]*\}`[^`]*`",  # maths, code, citations
    r"^\s*\d+\.\s", r"^#+ \d+\.", r"\(\d+\)",  # list and section numbering, equation numbers
    r"\d+×\d+", r"RTX \d+", r"\d{4}-\d\d-\d\d", r"(?:19|20)\d\d",  # image sizes, a device's name, dates, years
    r"(?:Table|Figure|Fig\.|Eq\.|§|Section|step|part) ?\d+",  # where in a paper or on the page
    r"\]\([^)]*\)")]  # link targets
CONSTANTS = {
    "95": "the confidence level of every interval",
    "1000": "ImageNet's classes", "16": "model-vs-human's categories", "200": "the classes of ImageNet-R/-A",
    "1,797": "the images of scikit-learn's digits data set (its documentation)",
    "0": "epoch 0 is the random initialisation", "1": "one, as in 'epoch 1' or 'n − 1'",
    "2": "a 2-core machine, the 2-class subset", "3": "a training image counts as 3 forward images",
    "256": "the images of the library page's example (its code says so)",
    "4090": "the RTX 4090 of timm's benchmark table", "25": "the Performance page's memory target",
}


def _numbers_in(value: Any) -> set[str]:
    """Every number written in a declaration: text, thresholds, settings (as typed and as formatted in prose)."""
    if isinstance(value, dict):
        return set().union(*map(_numbers_in, value.values()), set()) | {str(len(value))}
    if isinstance(value, (list, tuple)):
        return set().union(*map(_numbers_in, value), set()) | {str(len(value))}
    if isinstance(value, bool) or value is None:
        return set()
    if isinstance(value, (int, float)):
        return {f"{value:g}", f"{value:,}", f"{value:,g}", str(value), f"{100 * value:g}"}
    if hasattr(value, "__dataclass_fields__"):
        return _numbers_in({k: getattr(value, k) for k in value.__dataclass_fields__})
    return {m.group(1).replace("−", "-") for m in NUMBER.finditer(str(value))}


def declared() -> set[str]:
    found = _numbers_in(list(claims.CLAIMS.values()))
    for name in NOTEBOOKS:  # each chapter's settings and its named constants (e.g. a paper's FLOP band)
        chapter = importlib.import_module(f"tradeoffs.chapters.{name}")
        found |= _numbers_in([v for k, v in vars(chapter).items() if k.isupper() and not callable(v)])
    return found | set(CONSTANTS)


def without_skipped(text: str) -> str:
    """`text` with maths, code, citations, numbering, years and link targets blanked out (`SKIP`)."""
    for pattern in SKIP:
        text = pattern.sub(" ", text)
    return text


def typed_numbers(text: str) -> list[tuple[str, str]]:
    text = without_skipped(text)
    return [(m.group(1).replace("−", "-"), " ".join(text[max(0, m.start() - 40):m.end() + 20].split()))
            for m in NUMBER.finditer(text)]


def prose() -> dict[str, str]:
    pages = {p: (REPO / p).read_text() for p in STATIC}
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        pages[f"notebooks/{name}.ipynb"] = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return pages


@pytest.mark.parametrize("page", [*STATIC, *(f"notebooks/{n}.ipynb" for n in NOTEBOOKS)])
def test_no_measured_number_is_typed(page: str) -> None:
    known = declared()
    undeclared = [(n, where) for n, where in typed_numbers(prose()[page]) if n not in known]
    assert not undeclared, f"{page} types numbers declared nowhere: {undeclared}"


def test_the_scan_catches_a_typed_number() -> None:
    found = typed_numbers("Across 11 models the correlation is 0.83 (Table 1; see `x = 3`, $p < 0.05$, 2024).")
    assert [n for n, _ in found] == ["11", "0.83"]
