"""The book: generated pages (table of contents, data and models), the offline build, the library example."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from tradeoffs import bookpages, claims, provenance, store, verdicts
from tradeoffs.errors import TradeoffsError

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FakeEntry:
    """Same fields as a `tradeoffs.registry.Entry`."""

    path: str
    sha256: str
    size: int | None
    url: str
    licence: str
    origin: str
    converter: str | None = None
    source_sha256: str | None = None
    online_only: bool = False
    note: str = ""
    reproducible: bool = True
    packaged: bool = False
    documentation: bool = False

    @property
    def group(self) -> str:
        return self.path.split("/", 1)[0]


def fake_entries() -> list[FakeEntry]:
    """Three groups: a small one, one with converted and online-only files, one with more children than listed."""
    def entry(path: str, size: int | None, licence: str = "MIT", **kw: object) -> FakeEntry:
        group = path.split("/", 1)[0]
        return FakeEntry(path, hashlib.sha256(path.encode()).hexdigest(), size,
                         f"https://example.org/{group}/raw/{path}", licence, f"example/{group}@{'a' * 40}:{path}",
                         **kw)  # type: ignore[arg-type]

    return [
        entry("cifar10h/cifar10h-probs.npy", 1_600_128, licence="CC BY-NC-SA 4.0"),
        entry("cifar10/test.npz", 29_000_000, converter="jpeg_q75", source_sha256="f" * 64, note="use <the> archive"),
        entry("cifar10/SOURCES.md", 4_000, documentation=True),
        entry("cifar10/cifar-10-python.tar.gz", None, online_only=True),
        *(entry(f"model-vs-human/raw-data/d{i:02d}.csv", 10_000) for i in range(40)),
        *(entry(f"model-vs-human/file{i:02d}.txt", 1_000, licence="CC-BY-4.0") for i in range(20)),
    ]


def fake_models() -> pd.DataFrame:
    return pd.DataFrame({
        "name": ["cifar10_resnet56", "cifar10_resnet20", "mobilenet_v1_tflite"],
        "family": ["resnet-cifar", "resnet-cifar", "mobilenet"],
        "source": ["akamaster/pytorch_resnet_cifar10", "akamaster/pytorch_resnet_cifar10", "google-coral/test_data"],
        "licence": ["BSD-2-Clause", "BSD-2-Clause", "Apache-2.0"],
        "top1": [93.39, 91.73, float("nan")],
        "top1_dataset": ["CIFAR-10 test", "CIFAR-10 test", ""],
        "num_params": [855_770, 269_722, 4_200_000],
        "input_size": [(3, 32, 32), (3, 32, 32), 224],
        "weights_available_offline": [True, True, False],
    })


def install_fake_apis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for `registry.entries()` and `models.available()`, so page generation is tested on its own."""
    import tradeoffs
    from tradeoffs import registry

    monkeypatch.setattr(registry, "entries", fake_entries, raising=False)
    models = types.ModuleType("tradeoffs.models")
    models.available = fake_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tradeoffs.models", models)
    monkeypatch.setattr(tradeoffs, "models", models, raising=False)


@pytest.fixture()
def fake_apis(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_apis(monkeypatch)


def real_apis_missing() -> str:
    """Why the real registry/models APIs cannot be used yet ('' when they can)."""
    try:
        from tradeoffs import models, registry
    except ImportError as exc:
        return f"tradeoffs.models is not importable yet: {exc}"
    missing = [f"{mod.__name__}.{name}" for mod, name in ((registry, "entries"), (models, "available"))
               if not hasattr(mod, name)]
    return f"not written yet: {', '.join(missing)}" if missing else ""


def make_tree(root: Path, files: list[str]) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    return root


def chapters(toc: dict) -> list[str]:
    return [c["file"] for part in toc["parts"] for c in part["chapters"]]


# --- table of contents -------------------------------------------------------------------------------------------

def test_toc_lists_existing_claims_in_fixed_order(tmp_path: Path) -> None:
    make_tree(tmp_path, ["book/intro.md", "book/executed/anynetx_subsets.ipynb", "book/executed/inverted_u.ipynb",
                         "book/executed/human_alignment.ipynb", "book/executed/unrelated.ipynb"])
    toc = bookpages.toc(tmp_path)
    assert toc["format"] == "jb-book" and toc["root"] == "book/intro"
    claims = next(p for p in toc["parts"] if p["caption"] == "Claims")
    assert [c["file"] for c in claims["chapters"]] == [  # the order of tradeoffs.claims.CLAIMS
        "book/executed/inverted_u", "book/executed/anynetx_subsets", "book/executed/human_alignment"]
    assert "book/executed/unrelated" not in chapters(toc)


def test_toc_lists_the_scorecard_after_the_claims(tmp_path: Path) -> None:
    make_tree(tmp_path, ["book/intro.md", "book/executed/inverted_u.ipynb", "book/executed/score_model.ipynb"])
    parts = bookpages.toc(tmp_path)["parts"]
    assert [p["caption"] for p in parts] == ["Summary", "Claims", "Your model", "Reference"]
    assert parts[2]["chapters"] == [{"file": "book/executed/score_model"}]


def test_toc_optional_pages_only_when_present(tmp_path: Path) -> None:
    make_tree(tmp_path, ["book/intro.md"])
    toc = bookpages.toc(tmp_path)
    assert chapters(toc) == ["book/verdicts", "book/data_and_models", "book/reproducibility", "book/bibliography"]
    assert [p["caption"] for p in toc["parts"]] == ["Summary", "Reference"]
    make_tree(tmp_path, ["book/library.md", "book/performance.md", "book/executed/performance.ipynb"])
    toc = bookpages.toc(tmp_path)
    assert chapters(toc) == ["book/verdicts", "book/library", "book/data_and_models", "book/reproducibility",
                             "book/executed/performance", "book/bibliography"]


def test_write_toc_roundtrips_as_yaml(tmp_path: Path) -> None:
    make_tree(tmp_path, ["book/intro.md", "book/executed/early_stopping.ipynb"])
    path = bookpages.write_toc(tmp_path)
    assert path == tmp_path / "_toc.yml"
    assert yaml.safe_load(path.read_text()) == bookpages.toc(tmp_path)
    other = bookpages.write_toc(tmp_path, tmp_path / "elsewhere.yml")
    assert other.read_text() == path.read_text()


def test_committed_toc_is_the_fresh_checkout_toc(tmp_path: Path) -> None:
    """The tracked `_toc.yml` is what write_toc gives for a clone with no executed notebooks."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)

    if shutil.which("git") is None or git("ls-files", "--error-unmatch", "_toc.yml").returncode != 0:
        pytest.skip("_toc.yml is not tracked by git here")
    tracked = [f for f in git("ls-files", "book").stdout.splitlines() if not f.startswith("book/executed/")]
    expected = bookpages.toc_text(make_tree(tmp_path, tracked))
    assert git("show", ":_toc.yml").stdout == expected, "regenerate it: python -m tradeoffs.bookpages on a clean clone"


def test_main_refuses_a_folder_without_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bookpages.main(["--root", str(tmp_path)]) == 1
    assert "_config.yml" in capsys.readouterr().err


# --- data and models page ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (53_196_279, "53.2 MB"),
                                         (2.5e12, "2500.0 GB")])
def test_human_size(n: float, text: str) -> None:
    assert bookpages.human_size(n) == text


def test_data_page_summarises_groups(fake_apis: None) -> None:
    text = bookpages.data_and_models_text()
    summary = text.split("## Data files", 1)[1].split("### ", 1)[0]
    rows = [line for line in summary.splitlines() if line.startswith("| `")]
    assert [r.split(" | ")[0] for r in rows] == ["| `cifar10`", "| `cifar10h`", "| `model-vs-human`"]
    assert rows[2].split(" | ")[1:3] == ["60", "420.0 kB"]
    assert rows[2].split(" | ")[3:5] == ["MIT (40); CC-BY-4.0 (20)", "example/model-vs-human@aaaaaaa (60)"]
    assert rows[0].split(" | ")[1:3] == ["3", "29.0 MB + 1 of unknown size"]
    assert "Human alignment, Early stopping" in rows[1]
    mvh = re.split(r"\n#+ ", text.split("### `model-vs-human`", 1)[1], maxsplit=1)[0]
    detail = [line for line in mvh.splitlines() if line.startswith("| `")]
    assert len(detail) == bookpages.MAX_ROWS
    assert detail[-1].startswith("| `file14.txt`")
    assert "… and 6 more entries (45 files, 405.0 kB)." in mvh  # file15..19 and raw-data/ (40 files)
    assert "`https://example.org/model-vs-human/raw/model-vs-human/<file>`" in mvh
    cifar = re.split(r"\n#+ ", text.split("### `cifar10`", 1)[1], maxsplit=1)[0]
    assert "Derived files: 1 of 3 are converted from the published original (`jpeg_q75`)" in cifar
    assert "Online only: 1 file, downloaded" in cifar and r"use \<the\> archive" in cifar
    assert "Derived files" not in mvh
    assert "Documentation: 1 file describing the offline data root; no code reads it." in cifar
    assert "Documentation" not in mvh
    assert "d00.csv" not in text, "files inside a sub-folder are summarised, not listed"
    packaged = text.split("## Data inside Python packages", 1)[1].split("## Models", 1)[0]
    assert "`sklearn.datasets.load_digits()`" in packaged and "AnyNetX subsets" in packaged


def test_data_page_lists_models(fake_apis: None) -> None:
    models = bookpages.data_and_models_text().split("## Models", 1)[1]
    rows = [line.split(" | ") for line in models.splitlines() if line.startswith("| `")]
    assert [r[0] for r in rows] == ["| `mobilenet_v1_tflite`", "| `cifar10_resnet20`", "| `cifar10_resnet56`"]
    assert rows[1][1:6] == ["resnet-cifar", "91.7 (CIFAR-10 test)", "0.27", "3×32×32", "yes |"]
    assert rows[0][2] == "—"
    assert ("- akamaster/pytorch_resnet_cifar10; licence: BSD-2-Clause. Models: `cifar10_resnet20`, "
            "`cifar10_resnet56`.") in models


def test_data_page_refuses_unmapped_group(fake_apis: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from tradeoffs import registry

    extra = FakeEntry("mystery/a.bin", "0" * 64, 1, "", "", "")
    monkeypatch.setattr(registry, "entries", lambda: [*fake_entries(), extra])
    with pytest.raises(TradeoffsError, match="'mystery'.*USED_BY"):
        bookpages.data_and_models_text()


def test_data_page_from_real_registry_and_models() -> None:
    if reason := real_apis_missing():
        pytest.skip(reason)
    from tradeoffs import models, registry

    text = bookpages.data_and_models_text()
    for group in {e.group for e in registry.entries()}:
        assert f"### `{group}`" in text
    for name in models.available()["name"]:
        assert f"| `{name}` |" in text


# --- verdicts and reproducibility pages -------------------------------------------------------------------------

def _measured(lo: float, hi: float, n: int = 300, p: float = float("nan"), **gates: float) -> verdicts.Measured:
    return verdicts.Measured((lo + hi) / 2, lo, hi, n, p, "test interval", gates)


def summary_rows(text: str) -> list[list[str]]:
    """The cells of the verdicts page's summary table."""
    block = text.split("| Claim |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block]


@pytest.mark.parametrize(("seconds", "text"), [(0.0, "<1 s"), (42.4, "42 s"), (210, "3.5 min"), (4320, "72.0 min"),
                                               (5400, "1.5 h"), (float("nan"), "unknown")])
def test_duration(seconds: float, text: str) -> None:
    assert bookpages.duration(seconds) == text


def test_verdicts_page_says_not_yet_run(tmp_path: Path) -> None:
    text = bookpages.verdicts_text(tmp_path, directory=tmp_path)
    rows = summary_rows(text)
    assert [r[0] for r in rows] == [bookpages.TITLES[c] for c in bookpages.CLAIMS]
    assert all(r[1] == "{bdg-muted}`not yet run`" and r[3] == "—" and r[4] == "—" for r in rows)
    assert "(0 of 5 claims run so far)" in text
    assert text.count("Not yet run: no verdict is stored") == 5
    assert "`python -m tradeoffs.run --profile default --only anynetx_subsets`" in text


def test_verdicts_page_from_stored_rows(tmp_path: Path, isolated: Path) -> None:
    verdicts.record("human_alignment", {"serre_table": _measured(-0.8, -0.2, enough_n=300),
                                        "shape_bias": _measured(-0.4, 0.3, n=11, p=0.0123, enough_n=11),
                                        "cifar10h": _measured(-0.4, 0.9, n=4, enough_n=4)},
                    profile="default", parameters={})
    verdicts.record("inverted_u", {"cifar10h_beyond": _measured(-0.3, -0.1, enough_n=20, units_beyond=6, no_gap=30)},
                    profile="default", parameters={})
    make_tree(tmp_path, ["book/executed/inverted_u.ipynb"])
    text = bookpages.verdicts_text(tmp_path, directory=isolated / "results")
    rows = {r[0]: r for r in summary_rows(text)}
    human, inverted = rows["Human alignment"], rows["[Inverted U](executed/inverted_u.ipynb)"]
    assert human[1] == "{bdg-success}`supported`", "the primary test alone decides"
    assert human[3].startswith("Spearman(top-1, ClickMe alignment) beyond an optimum") and "n = 300" in human[3]
    assert human[4] == "claimants' data, re-analysed"
    assert inverted[1] == "{bdg-info}`not testable here`", "a failed gate takes the badge away"
    assert "(2 of 5 claims run so far)" in text
    section = text.split("### Human alignment", 1)[1].split("###", 1)[0]
    assert "Cited, not tested:" in section and "{bdg-muted}`not run in this profile`" in section
    assert "| 0.012 |" in section, "one judged secondary row: Holm leaves its p as it is"
    assert "{bdg-info}`not testable here`" in section, "4 CIFAR models fail the n gate"
    assert "`python -m tradeoffs.run" not in section
    gap = text.split("### Inverted U", 1)[1].split("###", 1)[0]
    assert "accuracy points; at most 10): measured 30 (fails; needs points" in gap and "consistent with the paper's -0.84" not in gap


def test_verdicts_page_refuses_a_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "early_stopping_verdict_default.nc").write_bytes(b"not netcdf")
    with pytest.raises(TradeoffsError, match="unreadable"):
        bookpages.verdicts_text(tmp_path, directory=tmp_path)


def test_reproducibility_page(tmp_path: Path, isolated: Path) -> None:
    import xarray as xr

    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/o/r/\n")
    ds = xr.Dataset({"score": ("model", [0.1, 0.2])}, coords={"model": ["a", "b"]})
    store.save(ds, "inverted_u_scores_default", profile="default", parameters={}, elapsed_s=210.0)
    store.save(ds, "inverted_u_scores_smoke", profile="smoke", parameters={}, elapsed_s=3.0)
    store.save(ds, "scratch_default", profile="default", parameters={}, elapsed_s=0.2)
    table = bookpages.provenance_rows(isolated / "results")
    assert list(table["notebook"]) == ["inverted_u", "inverted_u", "other"]
    assert table["torch"].iloc[0] == provenance.versions()["torch"]
    text = bookpages.reproducibility_text(tmp_path, isolated / "results")
    assert "3 results files from 2 notebooks" in text
    inverted = text.split("## Inverted U", 1)[1].split("## ", 1)[0]
    assert "`python -m tradeoffs.run --profile default --only inverted_u --reproduce`" in inverted
    assert "`python -m tradeoffs.run --profile smoke --only inverted_u --reproduce`" in inverted
    row = next(line for line in inverted.splitlines() if line.startswith("| `inverted_u_scores_default.nc`"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    commit, dirty = table["commit"].iloc[0], table["dirty"].iloc[0]
    assert cells[1] == "default" and re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d UTC in 3\.5 min, at .*", cells[2])
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        assert f"at [`{commit[:7]}`](https://github.com/o/r/commit/{commit})" in cells[2]
    assert cells[2].endswith(" + uncommitted changes") == dirty
    assert cells[3] == (f"{provenance.device_name()}; torch {provenance.versions()['torch']}, "
                        f"timm {provenance.versions().get('timm', '—')}")
    assert "## Other files" in text and "--only other" not in text


def test_reproducibility_page_without_results(tmp_path: Path) -> None:
    (tmp_path / "_config.yml").write_text("title: x\n")
    assert "No results are stored yet" in bookpages.reproducibility_text(tmp_path, tmp_path)


def test_main_writes_every_page(tmp_path: Path, fake_apis: None, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path, ["book/intro.md"])
    (tmp_path / "_config.yml").write_text("title: t\n")
    monkeypatch.setenv("TRADEOFFS_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    assert bookpages.main(["--root", str(tmp_path), "--toc", str(tmp_path / "_build" / "toc.yml")]) == 0
    for page in ("data_and_models", "verdicts", "reproducibility"):
        assert (tmp_path / "book" / f"{page}.md").is_file()
    assert "book/verdicts" in (tmp_path / "_build" / "toc.yml").read_text(), "a fresh clone has no _build/ yet"
    assert bookpages.main(["--root", str(tmp_path), "--profile", "fast"]) == 1
    assert "unknown profile 'fast'" in capsys.readouterr().err


# --- the build -----------------------------------------------------------------------------------------------------

CDN = re.compile(r"""(?:https?:)?//[^\s"'<>]*(?:jsdelivr|mathjax|cdnjs)[^\s"'<>]*""", re.IGNORECASE)


@dataclass(frozen=True)
class Built:
    """A book built from a copy of the checkout's pages: the copy (`src`, with its `_toc.yml`) and `html`."""

    src: Path
    html: Path

    def pages(self) -> list[str]:
        """The documents of the table of contents, root first."""
        toc = yaml.safe_load((self.src / "_toc.yml").read_text())
        return [toc["root"], *chapters(toc)]


def stand_in_notebook(path: Path, title: str = "Human alignment") -> None:
    """A small executed notebook shaped like a claim page: citation, math, a figure, a table."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([0, 1, 2], [1, 0, 1])
    ax.set(xlabel="ImageNet top-1 (%)", ylabel="score", title="Stand-in figure")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    table = pd.DataFrame({"statistic": ["Spearman rho"], "estimate": [-0.5], "ci_low": [-0.8], "ci_high": [-0.2]})
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(f"# {title}\n\nA stand-in page {{cite}}`fel2022` with $x^2$."),
        nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")]),
        nbformat.v4.new_code_cell("fig", metadata={"mystnb": {"image": {"alt": "A line falling then rising."}}},
                                  outputs=[nbformat.v4.new_output("display_data", data={
                                      "image/png": base64.b64encode(png.getvalue()).decode(),
                                      "text/plain": "<Figure>"})]),
        nbformat.v4.new_code_cell("table", outputs=[nbformat.v4.new_output(
            "execute_result", execution_count=3, data={"text/html": table.to_html(), "text/plain": str(table)})])])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def stand_in_verdict(directory: Path) -> None:
    """A verdict file for the stand-in page (only used where no human_alignment verdict is stored)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADEOFFS_RESULTS", str(directory))
        verdicts.record("human_alignment", {"serre_table": _measured(-0.8, -0.2, n=11, enough_n=11)},
                        profile="default", parameters={"stand_in": True})


_BUILT: list[Built] = []


def build_book(factory: pytest.TempPathFactory) -> Built:
    """Build the book once per test session from a copy of `_config.yml`, `book/` and `data/results/`.

    Where no notebook has been executed, a stand-in executed notebook (and its verdict) exercises the claim pages.
    """
    if _BUILT:
        return _BUILT[0]
    src = factory.mktemp("src")
    shutil.copy2(REPO / "_config.yml", src / "_config.yml")
    shutil.copytree(REPO / "book", src / "book", ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    results = src / "data" / "results"
    results.mkdir(parents=True)
    for stored in (REPO / "data" / "results").glob("*.nc"):
        shutil.copy2(stored, results)
    for claim in claims.CLAIMS.values():  # no executed notebooks here: small stand-ins exercise the claim pages
        placeholder = src / bookpages.EXECUTED / f"{claim.id}.ipynb"
        if not placeholder.exists():
            stand_in_notebook(placeholder, claim.title)
    if not (results / "human_alignment_verdict_default.nc").exists():
        stand_in_verdict(results)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TRADEOFFS_RESULTS", raising=False)
        if real_apis_missing():  # the real APIs are not there yet: build with the fake page
            install_fake_apis(mp)
        bookpages.write_pages(src, results)
    bookpages.write_toc(src)
    out = factory.mktemp("out")
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(src), "--path-output", str(out),
           "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"jupyter-book build failed:\n{(proc.stdout + proc.stderr)[-6000:]}"
    _BUILT.append(Built(src, out / "_build" / "html"))
    return _BUILT[0]


@pytest.fixture(scope="module")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built book's html/ (the checkout is not touched)."""
    return build_book(tmp_path_factory).html


@pytest.mark.slow
def test_book_builds_with_offline_math(built_book: Path) -> None:
    assert (built_book / "index.html").is_file()
    pages = list(built_book.rglob("*.html"))
    cdn = {f"{p.relative_to(built_book)}: {m}" for p in pages for m in CDN.findall(p.read_text(encoding="utf-8"))}
    assert not cdn, f"CDN URLs in the built HTML: {sorted(cdn)[:5]}"
    intro = (built_book / "book" / "intro.html").read_text(encoding="utf-8")
    script = re.search(r"""<script[^>]*src="([^"]*mathjax/tex-chtml\.js)"[^>]*>""", intro)
    assert script, "the intro page loads no MathJax script"
    assert (built_book / "book" / script.group(1)).resolve().is_file(), f"{script.group(1)} is not served locally"
    math = re.findall(r'<div class="math[^"]*"[^>]*>(.*?)</div>', intro, flags=re.DOTALL)
    assert any(r"\mathrm{2AFC}(d)" in m for m in math), "the 2AFC display equation is missing from the intro"


@pytest.mark.slow
def test_book_resolves_citations_and_pages(built_book: Path) -> None:
    bib = (built_book / "book" / "bibliography.html").read_text(encoding="utf-8")
    for author in ("Kumar", "Tuggener", "Kornblith", "Geirhos", "Peterson", "Radosavovic", "Zhang", "Taori"):
        assert author in bib, f"{author} is missing from the bibliography"
    for page in ("data_and_models", "verdicts", "reproducibility"):
        assert (built_book / "book" / f"{page}.html").is_file(), page
    intro = (built_book / "book" / "intro.html").read_text(encoding="utf-8")
    assert 'href="bibliography.html#' in intro, "citations in the intro do not link to the bibliography"
    assert 'href="verdicts.html"' in intro, "the intro does not link to the verdicts"


@pytest.mark.slow
def test_verdicts_page_lists_every_claim(built_book: Path) -> None:
    page = (built_book / "book" / "verdicts.html").read_text(encoding="utf-8")
    summary = page.split("<table", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", summary.split("<tbody", 1)[1], flags=re.DOTALL)
    assert len(rows) == len(bookpages.CLAIMS)
    for row, claim in zip(rows, bookpages.CLAIMS):
        assert bookpages.TITLES[claim] in row
        assert "sd-badge" in row, "the verdict badge did not render"
    assert "bd-sidebar-secondary" not in page, "the generated pages use the full width"
    assert 'href="bibliography.html#' in summary, "the paper citations do not link to the bibliography"


@pytest.mark.slow
def test_colab_and_edit_buttons_open_tracked_sources(built_book: Path) -> None:
    page = (built_book / "book" / "executed" / "human_alignment.html").read_text(encoding="utf-8")
    colab = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page)
    assert colab == ["https://colab.research.google.com/github/tradeoffs-book/tradeoffs/blob/main/"
                     "notebooks/human_alignment.ipynb"]
    edit = re.findall(r'href="(https://github\.com/[^"]+/edit/[^"]+)"', page)
    assert edit == ["https://github.com/tradeoffs-book/tradeoffs/edit/main/notebooks/human_alignment.ipynb"]
    verdict_page = (built_book / "book" / "verdicts.html").read_text(encoding="utf-8")
    assert re.findall(r'href="(https://github\.com/[^"]+/edit/[^"]+)"', verdict_page) == [
        "https://github.com/tradeoffs-book/tradeoffs/edit/main/lib/tradeoffs/bookpages.py"]


def test_header_buttons_rewritten_only_for_untracked_pages() -> None:
    def context(path: str, suffix: str) -> dict:
        return {"header_buttons": [
            {"label": "launch-buttons", "buttons": [
                {"text": "Colab", "url": f"https://colab.research.google.com/github/o/r/blob/main/{path}{suffix}"}]},
            {"label": "edit", "url": f"https://github.com/o/r/edit/main/{path}{suffix}"},
            {"label": "download", "buttons": [{"text": suffix, "url": f"../_sources/{path}{suffix}"}]}]}

    executed, other = context("book/executed/inverted_u", ".ipynb"), context("book/library", ".md")
    generated = context("book/verdicts", ".md")
    bookpages.source_links(None, "book/executed/inverted_u", "page.html", executed, None)
    bookpages.source_links(None, "book/library", "page.html", other, None)
    bookpages.source_links(None, "book/verdicts", "page.html", generated, None)
    assert executed["header_buttons"][0]["buttons"][0]["url"].endswith("/blob/main/notebooks/inverted_u.ipynb")
    assert executed["header_buttons"][1]["url"].endswith("/edit/main/notebooks/inverted_u.ipynb")
    assert other["header_buttons"][0]["buttons"][0]["url"].endswith("/blob/main/book/library.md")
    assert other["header_buttons"][1]["url"].endswith("/edit/main/book/library.md")
    assert generated["header_buttons"][1]["url"].endswith("/edit/main/lib/tradeoffs/bookpages.py")
    for page, path in ((executed, "book/executed/inverted_u.ipynb"), (generated, "book/verdicts.md")):
        assert page["header_buttons"][2]["buttons"][0]["url"] == f"../_sources/{path}", "the built copy is downloaded"


# --- the library example -------------------------------------------------------------------------------------------

def library_example() -> str:
    """The single python code block of book/library.md."""
    blocks = re.findall(r"^```python\n(.*?)^```", (REPO / "book" / "library.md").read_text(), re.M | re.S)
    assert len(blocks) == 1, f"book/library.md should have exactly one python block; found {len(blocks)}"
    return blocks[0]


def test_library_example_is_short() -> None:
    code = [line for line in library_example().splitlines() if line.strip()]
    assert len(code) <= 14, f"the library example has grown to {len(code)} lines"


@pytest.mark.data
def test_library_example_runs(data_root: Path, isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (data_root / "cifar10" / "test.npz").is_file():
        pytest.skip("cifar10/test.npz is not under the data root")
    namespace: dict = {}
    exec(compile(library_example(), "book/library.md", "exec"), namespace)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["cifar10_resnet20", "cifar10_resnet56"]
    assert float(namespace["d"]) > 0
    assert 0.7 < float(namespace["acc"]) < 0.95, "accuracy on the JPEG test images should be near 0.8 (see prose)"


def test_reproducibility_page_says_what_full_downloads_and_costs() -> None:
    lines = bookpages.full_profile_text(REPO / "data" / "results")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    assert set(rows) - {"Notebook"} == {bookpages.TITLES[c] for c in bookpages.CLAIMS}
    assert "ClickMe" in rows["Human alignment"] and "BAPPS" in rows["Inverted U"] and "ImageNet" in rows["AnyNetX subsets"]
    assert all(re.search(r"on a T4, .* on an A100", row) for name, row in rows.items() if name != "Notebook")
    text = "\n".join(lines)
    assert "estimates, not measurements" in text and "test_full_profile.py" in text
    assert "not estimated" in "\n".join(bookpages.full_profile_text(Path("/nonexistent")))


def test_pinned_hashes_are_listed(tmp_path: Path) -> None:
    assert "none (neither BAPPS nor ClickMe" in bookpages.pinned_text([tmp_path])
    (tmp_path / "clickme").mkdir()
    (tmp_path / "clickme" / "val-0.tfrecords").write_bytes(b"x")
    (tmp_path / "clickme" / "val-0.tfrecords.sha256").write_text("ab12  val-0.tfrecords\n")
    (tmp_path / "notes.sha256").write_text("cd34  gone\n")  # a manifest, not a record beside its file
    assert bookpages.pinned_text([tmp_path]).endswith(": `val-0.tfrecords` sha256 `ab12`.")
