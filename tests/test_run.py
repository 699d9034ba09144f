"""The papermill runner: parameters reach the notebook, failures name the cell, bad names are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from tradeoffs import run
from tradeoffs.errors import TradeoffsError

REPO = Path(__file__).resolve().parents[1]


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_runner_injects_profile_and_writes_executed_copy(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    _notebook(src / "tiny.ipynb", "from pathlib import Path\nPath('seen.txt').write_text(profile)")
    seconds = run.execute("tiny", src, out, "smoke", cwd=tmp_path)
    assert seconds > 0
    assert (tmp_path / "seen.txt").read_text() == "smoke"
    executed = json.loads((out / "tiny.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])


def test_runner_names_the_failing_cell(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _notebook(src / "broken.ipynb", "raise ValueError('bad model name')")
    with pytest.raises(TradeoffsError, match=r"broken failed in cell 3: ValueError: bad model name"):
        run.execute("broken", src, tmp_path / "out", "smoke", cwd=tmp_path)


def test_bad_profile_and_notebook_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--profile", "huge"]) == 1
    assert "unknown profile 'huge'" in capsys.readouterr().err
    with pytest.raises(TradeoffsError, match="did you mean human_alignment"):
        run.select(["human_alignment", "inverted_u"], ["human_alignmnt"])
    assert run.select(["a", "b", "c"], ["c", "a"]) == ["a", "c"]


def test_notebook_sources_carry_no_outputs() -> None:
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{path.name} has outputs"
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
        assert "profile" in "".join(tagged[0]["source"]), f"{path.name}: the parameters cell must set `profile`"


def test_run_order_puts_what_a_notebook_reads_first():
    from tradeoffs import claims

    order = list(run.ORDER)
    for claim in claims.CLAIMS.values():
        for needed in claim.needs:
            assert order.index(needed) < order.index(claim.id), f"{claim.id} reads {needed}'s results"
    assert set(order) == {*claims.CLAIMS, "performance", "score_model"}


def test_reproduce_starts_from_an_empty_cache(monkeypatch):
    seen = {}

    def fake_execute(name, source, output, profile, cwd, extra=None):
        seen[name] = (os.environ["TRADEOFFS_CACHE"], os.environ["TRADEOFFS_RECOMPUTE"])
        return 0.0

    for var in ("TRADEOFFS_CACHE", "TRADEOFFS_RECOMPUTE", "TRADEOFFS_RESULTS"):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # restored after the test
    monkeypatch.setattr(run, "execute", fake_execute)
    assert run.main(["--reproduce", "--only", "performance"]) == 0
    cache, recompute = seen["performance"]
    assert cache.endswith("_build/reproduce/cache") and recompute == "1"


def test_runner_pins_the_colab_install_to_the_commit_it_runs_at(monkeypatch):
    """Every executed notebook gets `ref` = HEAD, so its Colab cell installs the package the book was built from."""
    import subprocess

    seen = {}
    monkeypatch.setattr(run, "execute", lambda name, *args: seen.setdefault(name, args[-1]) and 0.0)
    assert run.main(["--only", "performance"]) == 0
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert seen == {"performance": {"ref": head}}
