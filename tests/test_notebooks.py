"""Every claim notebook runs on the `smoke` profile, writes labelled results with provenance, and builds with -W."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr

from tradeoffs import bookpages, claims, run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = run.notebooks(REPO / "notebooks")
pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.data]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A copy of the book with every notebook executed on `smoke` into it; results in its own folder."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy2(REPO / "_config.yml", site / "_config.yml")
    shutil.copytree(REPO / "book", site / "book", ignore=shutil.ignore_patterns("executed", "_build"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADEOFFS_RESULTS", str(site / "results"))
        mp.setenv("TRADEOFFS_CACHE", str(site / "cache"))
        mp.delenv("TRADEOFFS_RECOMPUTE", raising=False)
        for name in NOTEBOOKS:
            run.execute(name, REPO / "notebooks", site / "book" / "executed", "smoke", cwd=REPO)
    return site


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_writes_results_with_provenance(smoke: Path, name: str) -> None:
    assert (smoke / "book" / "executed" / f"{name}.ipynb").is_file()
    files = sorted((smoke / "results").glob(f"{name}_*_smoke.nc"))
    assert files, f"{name} wrote no results file on smoke"
    for path in files:
        with xr.open_dataset(path) as ds:
            for key in ("git_commit", "profile", "parameters", "versions", "device", "created_utc", "elapsed_s"):
                assert key in ds.attrs, f"{path.name} lacks {key}"
            assert ds.attrs["profile"] == "smoke"
            assert all(d for d in ds.dims), f"{path.name} has unnamed dims"
    if name in claims.CLAIMS:
        with xr.open_dataset(smoke / "results" / f"{claims.result_name(name, 'verdict', 'smoke')}.nc") as v:
            assert list(v.test.values) == [t.id for t in claims.claim(name).tests], "every declared test is stored"
            assert v.attrs["verdict"] == v.outcome.sel(test=v.attrs["primary_test"]).item()
            badge = v.outcome.isin(["supported", "not supported"])
            assert ((v.ci_low < v.ci_high) | ~badge).all(), "a badge on an inverted, missing or collapsed interval"


def test_book_builds_with_the_executed_notebooks(smoke: Path) -> None:
    bookpages.write_pages(smoke, smoke / "results", profile="smoke")
    bookpages.write_toc(smoke)
    out = smoke / "out"
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(smoke), "--path-output", str(out),
           "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"jupyter-book build failed:\n{(proc.stdout + proc.stderr)[-6000:]}"
    for name in NOTEBOOKS:
        page = out / "_build" / "html" / "book" / "executed" / f"{name}.html"
        assert page.is_file(), name
        html = page.read_text(encoding="utf-8")
        for leak in ("Traceback (most recent call last)", "Warning:", str(REPO), str(smoke)):
            assert leak not in html, f"{name}.html shows {leak!r}: a warning, a traceback or an absolute path"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pages_open_with_the_verdict_and_fold_their_code(name: str) -> None:
    """Reader-first: the verdict box right after the introduction; every code cell but the parameters folded."""
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    if name in claims.CLAIMS:
        assert "{glue:md} verdict" in nb.cells[1].source, "the verdict box does not open the page"
        assert "{glue:figure} main-figure" in nb.cells[1].source, "the main figure does not open the page"
        assert sum("chapters.main_figure(" in c.source for c in nb.cells) == 1, "one main figure per page"
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "code":
            assert tags & {"parameters", "hide-input", "remove-input", "remove-cell"}, cell.source[:80]
            assert "parameters" not in tags or not tags & {"hide-input", "remove-input"}, "parameters stay visible"


def _code_lines(name: str) -> list[str]:
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    return [line for c in nb.cells if c.cell_type == "code" for line in c.source.strip().splitlines()]


def test_notebooks_are_thin() -> None:
    """Parameters, a few library calls, figures, the verdict: analysis lives in tradeoffs.chapters, tested."""
    lines = {name: _code_lines(name) for name in NOTEBOOKS}
    assert {n: len(v) for n, v in lines.items() if len(v) > 150} == {}, "a notebook over 150 code lines"
    assert sum(map(len, lines.values())) <= 900
    for name, code in lines.items():
        defined = [line for line in code if line.lstrip().startswith(("def ", "class ", "lambda"))]
        assert not defined, f"{name} defines {defined}: put it in tradeoffs.chapters.{name}"
        wide = [line for line in code if len(line) > 100]
        assert not wide, f"{name} has code wider than the page (100 characters): {wide[0][:60]}…"


def test_one_colab_cell_with_the_repository_of_config() -> None:
    """Every notebook installs this package from the repository named once, in _config.yml."""
    import yaml

    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    cells = {name: next(c.source for c in nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4).cells
                        if "google.colab" in c.source) for name in NOTEBOOKS}
    assert len(set(cells.values())) == 1, "the Colab cells differ between notebooks"
    assert f'repo = "{url}"' in next(iter(cells.values()))
    import tomllib

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == url


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_cell_installs_the_ref_the_runner_pins(name: str) -> None:
    """The Colab cell follows the parameters cell and installs `ref`: "main" in the source, the commit the book was
    built from in the executed copy (`tradeoffs.run` passes it to papermill, test_run.py)."""
    cells = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4).cells
    i = next(k for k, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    assert re.search(r'^ref = "main"  #', cells[i].source, re.M), "the parameters cell has no ref"
    assert "google.colab" in cells[i + 1].source and "git+{repo}@{ref}" in cells[i + 1].source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_figure_cell_has_alt_text(name: str) -> None:
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert cell.metadata.get("mystnb", {}).get("image", {}).get("alt"), f"no alt text: {cell.source[:60]}"


NUMBER = re.compile(r"[−+-]?\d+(?:\.\d+)?(?:e[−+-]?\d+)?")


def _stored_numbers(ds: xr.Dataset) -> np.ndarray:
    """Every number a verdict file holds: values, and those written in its text (gate descriptions, settings)."""
    found = [ds[v].values.ravel().astype(float) for v in ds.variables if np.issubdtype(ds[v].dtype, np.number)]
    text = " ".join(str(x) for v in ds.variables if ds[v].dtype.kind in "UO" for x in ds[v].values.ravel())
    found.append(np.array([float(m.replace("−", "-")) for m in NUMBER.findall(text)]))
    values = np.concatenate(found)
    return values[np.isfinite(values)]


@pytest.mark.parametrize("name", list(claims.CLAIMS))
def test_verdict_box_numbers_come_from_the_stored_verdict(smoke: Path, name: str) -> None:
    """Every number in the verdict box that opens a page is a value of the stored verdict file (as rounded)."""
    nb = nbformat.read(smoke / "book" / "executed" / f"{name}.ipynb", as_version=4)
    boxes = [o["data"]["application/papermill.record/text/markdown"] for c in nb.cells for o in c.get("outputs", [])
             if o.get("metadata", {}).get("scrapbook", {}).get("name") == "verdict"]
    assert boxes, f"{name}: no verdict box glued"
    with xr.open_dataset(smoke / "results" / f"{claims.result_name(name, 'verdict', 'smoke')}.nc") as v:
        stored = _stored_numbers(v.load())
    for token in NUMBER.findall(boxes[0]):
        x = float(token.replace("−", "-"))
        decimals = len(token.split(".")[1].split("e")[0]) if "." in token else 0
        close = np.abs(np.abs(stored) - abs(x)) <= 0.5 * 10.0 ** -decimals + 1e-9 * abs(x)
        assert close.any(), f"{name}: {token} in the verdict box matches no value of the stored verdict file"
