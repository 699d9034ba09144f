"""The AnyNetX subsets chapter module: settings, the verdict's measured values and the page's sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tradeoffs import store
from tradeoffs.chapters import anynetx_subsets as ch
from tradeoffs.errors import TradeoffsError

REPO = Path(__file__).resolve().parents[1]

NONE = dict(n_architectures=None, n_replicates=None, epochs=None, source=None, n_workers=None, device=None)


def test_settings_resolve_the_profile_and_keep_it_where_a_parameter_is_none() -> None:
    P = ch.settings("default", {**NONE, "seed": 0})
    assert P == {**ch.PROFILES["default"], "seed": 0}
    P = ch.settings("smoke", {**NONE, "epochs": 3, "device": "cuda", "seed": 5})
    assert (P["epochs"], P["device"], P["seed"], P["n_architectures"]) == (3, "cuda", 5, 4)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(TradeoffsError, match="unknown profile 'huge'"):
        ch.settings("huge", {})


def test_full_profile_without_imagenet_says_what_to_pass() -> None:
    with pytest.raises(TradeoffsError, match="source folder:"):
        ch.plan(ch.settings("full", {"seed": 0}))


def _synthetic(n: int = 24) -> pd.DataFrame:
    """Accuracies where the 2-class source ranks like both targets and the full source ranks them in reverse."""
    skill = np.linspace(0, 1, n)
    acc = pd.DataFrame({"src-2": 0.6 + 0.2 * skill, "src-10": 0.5 - 0.2 * skill, "a": 0.3 + 0.5 * skill,
                        "b": 0.4 + 0.3 * skill ** 2}, index=pd.Index([f"d{i}" for i in range(n)], name="architecture"))
    return acc


def test_measured_gives_the_difference_and_its_gates() -> None:
    acc = _synthetic()
    reliability = pd.Series({"src-2": 0.9, "src-10": 0.8, "a": 0.7, "b": 0.4})
    m = ch.measured(acc, reliability, ["src-2", "src-10"], ["a", "b"], chance=0.5, seed=0)
    assert set(m) == {"subset_diff"}  # per-target tests are declared for fashion_mnist and digits only
    row = m["subset_diff"]
    assert row.estimate == pytest.approx(2.0) and row.n == 24
    assert row.gates["reliable"] == pytest.approx(0.4) and row.gates["architectures"] == 24
    mean = acc["src-2"].mean()
    assert 0 < row.gates["above_chance"] < 100 * (mean - 0.5)  # the lower bound lies below the mean


def test_measured_per_target_rows_use_their_own_reliability() -> None:
    acc = _synthetic().rename(columns={"a": "fashion_mnist", "b": "digits"})
    reliability = pd.Series({"src-2": 0.9, "src-10": 0.8, "fashion_mnist": 0.7, "digits": 0.4})
    m = ch.measured(acc, reliability, ["src-2", "src-10"], ["fashion_mnist", "digits"], chance=0.5, seed=0)
    assert set(m) == {"subset_diff", "subset_diff_fashion_mnist", "subset_diff_digits"}
    assert m["subset_diff_fashion_mnist"].gates["reliable"] == pytest.approx(0.7)
    assert m["subset_diff_digits"].gates["reliable"] == pytest.approx(0.4)


def test_correlations_and_their_table() -> None:
    acc = _synthetic()
    corr = ch.correlations(acc, ["src-2", "src-10"], ["a", "b"], [2, 10])
    assert list(corr["source"]) == ["src-2", "src-2", "src-10", "src-10"]
    assert corr["spearman"].tolist() == pytest.approx([1, 1, -1, -1])
    table = ch.correlation_table(corr)
    assert table["Spearman ρ [95% CI]"].iloc[2].startswith("-1.00 [") and table["n"].tolist() == [24] * 4


def test_noise_text_reports_ratios_corrected_correlations_and_budget() -> None:
    acc = _synthetic()
    corr = ch.correlations(acc, ["src-2", "src-10"], ["a", "b"], [2, 10])
    noise = pd.DataFrame({"ratio": [2.0, 4.0, 1.5, 3.0], "reliability": [0.75, 0.9375, 0.5556, 0.8889],
                          "test images": [600, 3000, 3000, 700]}, index=["src-2", "src-10", "a", "b"])
    P = {"subsets": [2, 10], "n_train": 200, "n_replicates": 3}
    text = ch.noise_text(acc, corr, noise, {"src-2": 240, "src-10": 248}, P)
    assert "across the 24 architectures is 1.5–4.0 times the noise" in text
    assert "the 3 architectures trained twice; test noise from 600–3,000 test images" in text
    assert "lowest on a (reliability 0.56, 3,000 test images)" in text
    assert "1.00 for src-2 and -1.00 for src-10 (24 architectures)" in text  # corrected values are clipped to [−1, 1]
    assert ("240 SGD steps on src-2 (mean accuracy 0.70 over 24 architectures on 600 test images, chance 0.50) "
            "against 248 on src-10 (mean accuracy 0.40 on 3,000 test images)") in text
    assert "holds 200 training images per class" in text


def _verdict() -> xr.Dataset:
    from tradeoffs import verdicts

    m = verdicts.Measured(-0.6, -1.0, -0.2, 24, gates={"above_chance": 15.6, "reliable": 0.42, "architectures": 24})
    return verdicts.evaluate("anynetx_subsets", {"subset_diff": m}, "default")


def test_gates_text_shows_each_measured_gate_beside_its_threshold() -> None:
    noise = pd.DataFrame({"reliability": [0.42, 0.3, 0.9, 0.7, 0.8], "test images": [600, 1500, 3000, 3000, 700]},
                         index=["src-2", "src-5", "src-10", "a", "b"])
    text = ch.gates_text(_verdict(), noise, ["src-2", "src-5", "src-10"], ["a", "b"])
    assert "above_chance 15.6 (needs above 0: passes)" in text
    assert "reliable 0.42 (needs at least 0.5: **fails**)" in text
    assert "architectures 24 (needs at least 20: passes)" in text
    assert text.endswith("src-2 (600 test images, 24 architectures).")  # src-5 is not among the data sets it uses


def test_cost_and_full_texts() -> None:
    runs = xr.Dataset({"train_seconds": ("run", [600.0, 1200.0])},
                      attrs={"elapsed_s": 90.0, "device": "cpu", "created_utc": "2026-01-01T00:00:00Z"})
    text = ch.cost_text(runs, 2, 2)
    assert text.startswith("The 2 training runs add up to 30 minutes on one CPU thread (about 15 minutes")
    assert "took 1.5 minutes on cpu (2026-01-01T00:00:00Z)" in text
    full = ch.full_text(_verdict())
    assert "samples 100 architectures" in full and "340–400 M multiply-add band scaled to 64² pixels" in full
    assert "10, 100, 1000 classes" in full and "spans 0.80 with 24 architectures" in full
    assert full.endswith("It has not been run here: there are no `full` results.")


def test_stored_default_verdict_is_what_measured_gives() -> None:
    runs = store.load("anynetx_subsets_runs_default")
    P = store.parameters_of(runs)
    acc = ch.accuracy(runs, P["seed"])
    role = dict(zip(runs.dataset.values, runs.role.values))
    src = [d for d in acc.columns if role[d] == "source"]
    tgt = [d for d in acc.columns if role[d] == "target"]
    per_class = {**{s: P["n_test"] for s in src}, **{t[0]: t[2] for t in P["targets"]}}
    n_test = {d: per_class[d] * int(c) for d, c in zip(runs.dataset.values, runs["classes"].values)}
    noise = ch.noise_table(runs, acc, n_test)
    m = ch.measured(acc, noise["reliability"], src, tgt, 1 / P["subsets"][0], P["seed"])
    stored = store.load("anynetx_subsets_verdict_default")
    for test, row in m.items():
        s = stored.sel(test=test)
        assert (row.estimate, row.ci_low, row.ci_high) == pytest.approx(
            (float(s.estimate), float(s.ci_low), float(s.ci_high)), abs=1e-12)
        for gate, value in row.gates.items():
            if gate in s.gate.values and np.isfinite(float(s.gate_measured.sel(gate=gate))):
                assert value == pytest.approx(float(s.gate_measured.sel(gate=gate)), abs=1e-12)


@pytest.mark.data
def test_smoke_plan_lays_out_every_run(data_root) -> None:
    P = ch.settings("smoke", {**NONE, "seed": 0})
    plan = ch.plan(P)
    assert plan.src == ["cifar10-2", "cifar10-5", "cifar10-10"] and plan.tgt == ["fashion_mnist", "digits"]
    assert len(plan.tasks) == (4 + 2) * 5
    assert plan.n_test == {"cifar10-2": 40, "cifar10-5": 100, "cifar10-10": 200, "fashion_mnist": 200, "digits": 200}
    assert plan.steps == {"cifar10-2": 5 * (40 // 16), "cifar10-5": 2 * (100 // 16), "cifar10-10": 200 // 16}
    text = ch.plan_text(plan, P)
    assert text.startswith("This run: **4 architectures** (multiply-adds 0.2–0.5 M at 32² pixels), 3 source data")
    assert "(5 on cifar10-2, 2 on cifar10-5: the same images seen)" in text and "30 training runs on cpu." in text
    assert "cifar10-2: 2 classes (deer, frog), 40 training and 40 test images;" in text
    assert "digits = the UCI optical digits (handwritten digits): 10 classes, 200 training and 200 test images." in text


def test_reach_text_scales_sampling_noise_with_the_test_images() -> None:
    noise = pd.DataFrame({"across": [0.05], "seed": [0.03], "sampling": [0.02], "test images": [600]}, index=["s-2"])
    text = ch.reach_text(noise, "s-2", 2400)
    # all 2,400 images halve the sampling SD: 1 − (√(0.03² + 0.01²) / 0.05)² = 0.60; unlimited: 1 − 0.36 = 0.64
    assert "scoring all 2,400 test images its classes hold would give reliability 0.60" in text
    assert "unlimited test images at most 0.64" in text and "seed noise (SD 0.030" in text and "exceeds" in text
    assert "do not differ at all" in ch.reach_text(noise.assign(across=0.0), "s-2", 2400)


def test_first_run_text_reads_the_stored_first_run(isolated) -> None:
    first = store.load("anynetx_subsets_firstrun_default", REPO / "data" / "results")
    store.save(first, "anynetx_subsets_firstrun_default", profile="default",
               parameters={**store.parameters_of(first)}, elapsed_s=1.0)
    now = first.copy()
    now.attrs["parameters"] = json.dumps({**store.parameters_of(first), "n_test": 1000})
    text = ch.first_run_text(now)
    assert "scored each source subset on 300 test images per class and failed the reliability gate (0.42)" in text
    assert "raised to 1,000 per class" in text and "After that result was seen" in text
    assert ch.first_run_text(first) == "", "no change, no sentence"
    now.attrs["profile_judged"] = "smoke"
    assert ch.first_run_text(now) == "", "no stored first run for this profile"
