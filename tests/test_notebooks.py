"""Every claim notebook runs on the `smoke` profile, writes labelled results with provenance, prints only numbers it
stored (or declared), and builds with -W."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import nbformat
import numpy as np
import pytest
import test_prose
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


# Numbers a page prints that are derived from stored values but stored nowhere themselves, per notebook: a pattern of
# the page's markdown output (its groups are the derived numbers) and why it is not a stored value.
DERIVED: dict[str, dict[str, str]] = {
    "anynetx_subsets": {r"Tuggener et al.'s (\d+)–(\d+) M multiply-add": "PAPER_BAND, declared in multiply-adds",
                        r"(?:([\d,]+) training and )?([\d,]+)(?:–([\d,]+))? test images": "classes × per class",
                        r"add up to (\d+) minutes": "the stored train_seconds, summed",
                        r"is ([\d.]+)–([\d.]+) times the noise": "spread across architectures over measurement noise",
                        r"data sets is (\S+) for \S+ and (\S+) for": "attenuation-corrected correlations",
                        r"budget: (\d+) SGD steps on .+? against (\d+) on": "epochs × images ÷ batch size"},
    "dataset_correlation": {r"published top-1 by at most ([\d.]+) points": "max |timm − torchvision| top-1",
                            r"the lowest is \S+ \(r = ([\d.−-]+)\)": "the smallest per-data-set Pearson r",
                            r"results took ([\d.]+) min": "the elapsed_s of the page's results files, summed"},
    "early_stopping": {r"accounts for at most ([\d.]+) nats": "max over epochs of mean raw − calibrated KL",
                       r"raw KL falls by ([\d.]+) nats": "mean raw KL, first minus last epoch",
                       r"([\d.]+)% of the fall": "a held-out gain (mean, or its upper bound) over the calibrated-KL fall",
                       r"runs took ([\d.]+) min in all": "the runs' training times, summed"},
    "human_alignment": {r"and ([\d.]+) as the mean of the \d+ observers": "mean shape bias of the human observers",
                        r"(\d+) of the \d+ models average above 1": "count of serre-lab models above the ceiling",
                        r"results took ([\d.]+) min": "the elapsed_s of the page's results files, summed"},
    "inverted_u": {r"sign test p = ([\d.e−-]+)": "binomial sign test on the counts of Table 1's cells",
                   r"(\d+) CIFAR-10 points: \d+ pretrained models and (\d+) checkpoints": "counts of points",
                   r"\((\d+) points, (\d+) independent units": "points and models + runs of a fitted curve",
                   r"results took ([\d.]+) min": "the elapsed_s of the page's results files, summed"},
}
READS = {"inverted_u": ("early_stopping", "human_alignment"), "human_alignment": ("early_stopping",)}  # others' files
BENCHMARKS = REPO / "data" / "benchmarks"  # the stored benchmark runs the performance page shows
RAW_LIMIT = 100  # a larger array (per image, trial or table row) counts only through its means, mins and maxes
UNITS = {"%": 100, "min": 1 / 60, "M": 1e-6}  # a percentage of a fraction, minutes of seconds, millions
RANGE_END = re.compile(r"^\s*–\s*[−-]?\d[\d,.]*")
MARKDOWN = ("text/markdown", "application/papermill.record/text/markdown")  # displayed, glued
TEXT_NUMBER = re.compile(r"[−+-]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[−+-]?\d+)?")


def _numbers_of_text(text: str) -> np.ndarray:
    return np.array([float(t.replace("−", "-").replace(",", "")) for t in TEXT_NUMBER.findall(text)])


def _summaries(a: np.ndarray) -> list[np.ndarray]:
    """An array's values (up to `RAW_LIMIT`), sizes, count of finite values, and mean, min and max over all of it and
    along each dim."""
    a = a.astype(float)
    found = [a.ravel() if a.size <= RAW_LIMIT else np.array([]), np.array([*a.shape, np.isfinite(a).sum()], float)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        for f in (np.nanmean, np.nanmin, np.nanmax):
            found += [np.ravel(f(a))] + ([np.ravel(f(a, axis=i)) for i in range(a.ndim)] if a.ndim > 1 else [])
    return found


def _stored_numbers(ds: xr.Dataset) -> np.ndarray:
    """Every number a results file holds: values of variables and coordinates with their summaries, and the numbers
    written in its text and attrs (labels, gate descriptions, parameters)."""
    found = [np.array(list(ds.sizes.values()), float)]
    for v in ds.variables.values():
        if v.dtype.kind in "biuf":
            found += _summaries(v.values)
        else:
            found.append(_numbers_of_text(" ".join(map(str, v.values.ravel()))))
    found.append(_numbers_of_text(" ".join(map(str, ds.attrs.values()))))
    values = np.abs(np.concatenate(found))
    return np.unique(values[np.isfinite(values)])


def _published_numbers() -> np.ndarray:
    """The numbers of the transcribed published tables (`data.table("published/...")`) and of the model catalogue
    (published top-1, input sizes, parameters)."""
    from tradeoffs import data, models

    tables = [data.table(n) for n in data.table_names() if n.startswith("published/")]
    return np.abs(np.concatenate([_numbers_of_text(t.to_csv()) for t in [*tables, models.available()]]))


def _blank_groups(m: re.Match) -> str:
    text = m.group(0)
    for i in range(1, len(m.groups()) + 1):
        if m.start(i) < 0:  # an optional group that did not take part
            continue
        a, b = m.start(i) - m.start(), m.end(i) - m.start()
        text = text[:a] + " " * (b - a) + text[b:]
    return text


def unmatched(markdown: str, stored: np.ndarray, known: set[str], derived: Iterable[str] = ()) -> list[str]:
    """Numbers in `markdown` that are neither declared (`known`, as typed) nor a stored value as rounded on the page
    (with a unit of `UNITS`, also a stored value scaled to it); the groups of the `derived` patterns are left out."""
    for pattern in derived:
        markdown = re.sub(pattern, _blank_groups, markdown)
    text, found = test_prose.without_skipped(markdown), []
    for m in test_prose.NUMBER.finditer(text):
        token = m.group(1).replace("−", "-")
        if token in known:
            continue
        x = abs(float(token.replace(",", "")))
        decimals = len(token.split(".")[1]) if "." in token else 0
        after = RANGE_END.sub("", text[m.end():]).lstrip()  # the unit after "a–b" is a's too
        scales = [1, *(scale for unit, scale in UNITS.items() if after.startswith(unit))]
        if not any((np.abs(stored * s - x) <= 0.5 * 10.0 ** -decimals + 1e-9 * x).any() for s in scales):
            found.append(f"{token} in “…{' '.join(text[max(0, m.start() - 50):m.end() + 20].split())}…”")
    return found


@pytest.mark.parametrize("name", list(claims.CLAIMS))
def test_verdict_box_numbers_come_from_the_stored_verdict(smoke: Path, name: str) -> None:
    """Every number in the verdict box that opens a page is a value of the stored verdict file (as rounded)."""
    nb = nbformat.read(smoke / "book" / "executed" / f"{name}.ipynb", as_version=4)
    boxes = [o["data"][MARKDOWN[1]] for c in nb.cells for o in c.get("outputs", [])
             if o.get("metadata", {}).get("scrapbook", {}).get("name") == "verdict"]
    assert boxes, f"{name}: no verdict box glued"
    with xr.open_dataset(smoke / "results" / f"{claims.result_name(name, 'verdict', 'smoke')}.nc") as v:
        found = unmatched(boxes[0], _stored_numbers(v.load()), set())
    assert not found, f"{name}: the verdict box prints numbers that match no value of the stored verdict file: {found}"


def _markdown_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """Every markdown output of an executed notebook: displayed (display_data, execute_result) and glued."""
    return [o["data"][k] for c in nb.cells for o in c.get("outputs", []) for k in MARKDOWN if k in o.get("data", {})]


def _page_numbers(results: Path, name: str, profile: str = "smoke") -> np.ndarray:
    """The stored values a notebook can print: its own results files, those it reads (other pages' files, stored
    benchmarks), the published tables."""
    files = [p for n in (name, *READS.get(name, ())) for p in sorted(results.glob(f"{n}_*_{profile}.nc"))
             + sorted(results.glob(f"{n}_{profile}.nc"))]
    files += sorted(BENCHMARKS.glob("*.nc")) if name == "performance" else []
    found = [_published_numbers()]
    for path in files:
        with xr.open_dataset(path) as ds:
            found.append(_stored_numbers(ds.load()))
    return np.unique(np.concatenate(found))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_markdown_output_numbers_are_stored_values(smoke: Path, name: str) -> None:
    """Every number in a page's markdown output is declared (`test_prose`), a value of a stored results file the page
    reads (or a mean, min or max of one), or a number of a transcribed published table; `DERIVED` lists the rest."""
    nb = nbformat.read(smoke / "book" / "executed" / f"{name}.ipynb", as_version=4)
    stored, known = _page_numbers(smoke / "results", name), test_prose.declared()
    pages = _markdown_outputs(nb)
    found = [n for md in pages for n in unmatched(md, stored, known, DERIVED.get(name, {}))]
    assert not found, f"{name} prints numbers that match no stored value: {found}"
    stale = [p for p in DERIVED.get(name, {}) if not any(re.search(p, md) for md in pages)]
    assert not stale, f"{name}: DERIVED patterns that match nothing on the page: {stale}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_built_default_book_prints_only_stored_numbers(name: str) -> None:
    """The same scan on the `default` pages `make book` executed into book/executed, against data/results (runs
    where the book was built; CI builds only `smoke`)."""
    path = REPO / "book" / "executed" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4) if path.is_file() else None
    if nb is None or nb.metadata.get("papermill", {}).get("parameters", {}).get("profile") != "default":
        pytest.skip("no default book built in this checkout (`make book` builds it)")
    stored, known = _page_numbers(REPO / "data" / "results", name, "default"), test_prose.declared()
    found = [n for md in _markdown_outputs(nb) for n in unmatched(md, stored, known, DERIVED.get(name, {}))]
    assert not found, f"{name} (default) prints numbers that match no stored value: {found}"


def test_a_planted_number_is_caught(smoke: Path) -> None:
    nb = nbformat.read(smoke / "book" / "executed" / "inverted_u.ipynb", as_version=4)
    page = next(md for md in _markdown_outputs(nb) if "Scored here" in md)  # the closing summary
    stored, known = _page_numbers(smoke / "results", "inverted_u"), test_prose.declared()
    derived = DERIVED["inverted_u"]
    assert not unmatched(page, stored, known, derived)
    planted = unmatched(page.replace(". ", ". The largest gain is 0.7431 points. ", 1), stored, known, derived)
    assert [p.split(" in ")[0] for p in planted] == ["0.7431"]
