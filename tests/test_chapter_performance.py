"""The Performance chapter's tables from the stored CPU benchmark, and its Colab workload arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tradeoffs.chapters import performance as ch
from tradeoffs.errors import TradeoffsError

STORED = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "cpu.nc"


@pytest.fixture(scope="module")
def runs() -> dict[str, xr.Dataset]:
    with xr.open_dataset(STORED) as ds:
        return {"cpu": ds.load()}


def test_settings() -> None:
    assert ch.settings("default", {"scale": None, "threads": 4, "device": "cpu"}) == dict(
        source="stored", plan="full", scale=1, threads=4, device="cpu")
    with pytest.raises(TradeoffsError, match="unknown profile"):
        ch.settings("huge", {})


def test_ratios_divide_round_by_round(runs: dict[str, xr.Dataset]) -> None:
    ratios = ch.ratios(runs)
    s = runs["cpu"].images_per_s
    eh = (s.sel(variant="extract") / s.sel(variant="hooks")).isel(case=0).values
    row = ratios[(ratios.variant == "extract / hooks") & (ratios.case == str(runs["cpu"].case[0].item()))].iloc[0]
    assert row.ratio == pytest.approx(np.median(eh)) and row.low == pytest.approx(eh.min())
    table = ch.ratio_table(ratios)
    assert list(table.index) == list(runs["cpu"].case.values) and "extract (×)" in table


def test_targets_report_the_worst_case(runs: dict[str, xr.Dataset]) -> None:
    ratios, fractions = ch.ratios(runs), ch.fractions(runs)
    t = ch.targets(runs, ratios, fractions).set_index("target")
    worst = ratios[ratios.variant == "extract"].ratio.min()
    row = t.loc["extraction ≥ 0.9× plain forward"]
    assert row["measured (worst case)"].startswith(f"{worst:.2f}×")
    assert row.status == ("met" if worst >= 0.9 else "not met") and (row["why not met"] == "") == (worst >= 0.9)
    first = ratios[ratios.variant == "extract_first_cached"].ratio.min()
    row = t.loc["first cached run ≥ 0.9× plain forward"]
    assert row["measured (worst case)"].startswith(f"{first:.2f}×") and row.status == ("met" if first >= 0.9 else "not met")
    assert "--quick (worst case)" not in t


def test_targets_add_the_quick_benchmark_beside_the_full_one(runs: dict[str, xr.Dataset]) -> None:
    with xr.open_dataset(STORED.with_name("cpu_quick.nc")) as ds:
        quick = {"cpu": ds.load()}
    t = ch.targets(runs, ch.ratios(runs), ch.fractions(runs), quick).set_index("target")
    first = ch.ratios(quick).query("variant == 'extract_first_cached'").ratio.min()
    cell = t.loc["first cached run ≥ 0.9× plain forward", "--quick (worst case)"]
    assert cell.startswith(f"{first:.2f}×") and cell.endswith(": met" if first >= 0.9 else ": not met")
    assert t.loc["flat memory, 1,000 → 10,000 images", "--quick (worst case)"] == ""
    assert ch.quick_runs({"source": "stored"}).keys() == {"cpu"} and ch.quick_runs({"source": "run"}) == {}


def test_workload_counts_training_and_scoring() -> None:
    p = {"seeds": [0, 1], "epochs": 3, "models": ["m"], "n_train": 100, "n_eval": 10}
    assert ch._workload("early_stopping", p, {}, 0) == [("m", 32, 600, True), ("m", 32, 60, False)]
    with pytest.raises(TradeoffsError, match="no workload"):
        ch._workload("other", {}, {}, 0)


def test_colab_table_formats_hours() -> None:
    est = xr.Dataset({"gpu_images": ("notebook", [2e6]), "networks": ("notebook", [3]),
                      "cpu_networks": ("notebook", [1]), "hours_T4": ("notebook", [0.005]),
                      "hours_A100 40GB": ("notebook", [2.5]), "memory_gb": ("notebook", [1.26])},
                     coords={"notebook": ["x"]}, attrs={"mvh_images": 17})
    row = ch.colab_table(est).loc["x"]
    assert (row["T4 (estimate)"], row["A100 40GB (estimate)"], row["networks (CPU-only)"]) == ("< 1 min", "2.5 h",
                                                                                               "3 (1)")
    assert "Not estimated: y" in ch.colab_note(est, ["inverted_u", "y", "performance"])
