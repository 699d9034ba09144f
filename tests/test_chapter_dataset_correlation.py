"""The dataset-correlation chapter module: settings, stored results under their keys, and the page's sentences."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tradeoffs import store
from tradeoffs.chapters import dataset_correlation as ch
from tradeoffs.errors import TradeoffsError

REPO = Path(__file__).resolve().parents[1]


def test_settings_resolve_the_profile_and_keep_it_where_a_parameter_is_none() -> None:
    P = ch.settings("default", {"models": None, "n_test": None, "n_train": 20, "device": "cpu", "seed": 3})
    assert P["models"] == ch.OFFLINE and len(P["models"]) == 11
    assert P["n_test"] == 1000 and P["n_train"] == 20 and P["device"] == "cpu" and P["seed"] == 3
    assert P["datasets"] == ["CIFAR-10", "Fashion-MNIST"] and P["Cs"] == [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    assert ch.settings("smoke", {})["n_test"] == 50 and ch.settings("full", {})["finetune_models"] == ch.ZOO


def test_settings_refuse_an_unknown_profile() -> None:
    with pytest.raises(TradeoffsError, match="unknown profile 'huge'"):
        ch.settings("huge", {})


@pytest.mark.data
def test_stored_default_results_reload_under_their_keys(data_root, monkeypatch) -> None:
    """The chapter's content keys equal the stored files' keys: nothing is recomputed (REUSE_ONLY would raise)."""
    monkeypatch.setenv("TRADEOFFS_RESULTS", str(REPO / "data" / "results"))
    monkeypatch.setenv("TRADEOFFS_REUSE_ONLY", "1")
    monkeypatch.delenv("TRADEOFFS_RECOMPUTE", raising=False)
    P = ch.settings("default", {"device": "auto", "seed": 0})
    assert ch.load_zoo("default").sizes["model"] > 1000
    assert ch.load_probes(P, "default").sizes["model"] == 13
    assert ch.load_tllib("default").sizes["model"] == 10
    assert ch.load_finetune(P, "default") is None


@pytest.mark.data
def test_measured_and_comparison_reproduce_the_stored_verdict(data_root) -> None:
    stored = store.load("dataset_correlation_verdict_default", REPO / "data" / "results")
    zoo, pr, tl = (store.load(f"dataset_correlation_{p}_default", REPO / "data" / "results")
                   for p in ("zoo", "probes", "tllib"))
    zoo_stats, _ = ch.zoo_statistics(zoo)
    probe_stats, tl_stats, overall = ch.probe_statistics(pr), ch.tllib_statistics(tl), ch.tllib_overall(tl, 0)
    measured = ch.measured(zoo_stats, probe_stats, pr, overall, None)
    assert set(measured) == {"tllib", "tllib_mean_r", "zoo_shifted", "probe_cifar_10", "probe_fashion_mnist"}
    for test, m in measured.items():
        row = stored.sel(test=test)
        assert (m.estimate, m.ci_low, m.ci_high, m.n) == pytest.approx(
            (float(row.estimate), float(row.ci_low), float(row.ci_high), int(row.n)), rel=1e-9)
        assert m.gates["enough_n"] == m.n
    assert measured["zoo_shifted"].note == str(stored.sel(test="zoo_shifted").note.item())
    text = ch.comparison_text(tl, tl_stats, overall, zoo_stats, pr)
    pooled = overall["pooled"]
    assert "their 16 networks between ImageNet top-1 and transfer accuracy on 12 data sets: r = 0.96" in text
    assert f"r = {pooled['r']:.2f} [{pooled['ci_low']:.3f}, {pooled['ci_high']:.3f}]" in text
    assert pooled["ci_high"] < 0.96 and f"excludes 0.96 (it ends at {pooled['ci_high']:.3f})" in text
    sd = 100 * ch._noise(pr)["CIFAR-10"]["sampling"]
    assert f"n = 1000 test images per data set, so one probe score has a binomial SD of {sd:.1f} points (CIFAR-10)" in text
    models = ch.probed_models_text(pr)
    assert models.startswith("The 11 probed ImageNet models are offline mobile networks: 3 EfficientNet-Lite")
    assert "8 TFLite MobileNets" in models and "from 39.9 to 77.5 %" in models and "128 to 260 px" in models
    assert "`mobilenet_v2_1.0_224_quant` is placed at its float model's published top-1 (71.8 %" in models


def _tllib(timm_names: list[str], top1: list[float], top1_timm: list[float]) -> xr.Dataset:
    models = [f"M{i}" for i in range(len(top1))]
    return xr.Dataset({"finetuned_acc": (("model", "dataset"), np.full((len(models), 1), 80.0))},
                      coords={"model": models, "dataset": ["D"], "top1": ("model", top1),
                              "timm_name": ("model", timm_names), "top1_timm": ("model", top1_timm)})


def test_tllib_join_text_names_the_joined_models_and_the_largest_difference() -> None:
    tl = _tllib(["a.tv_in1k", "", "c.tv_in1k"], [70.0, 75.0, 80.0], [70.5, math.nan, 79.75])
    assert ch.tllib_join_text(tl) == (
        "timm lists the same torchvision weights (`.tv_in1k`) for 2 of 3 models (M0, M2); not for M1. Their timm "
        "re-evaluation differs from torchvision's published top-1 by at most 0.50 points, so the correlations below "
        "use torchvision's numbers for all 3 models and repeat them on timm's for the 2 that joined.")


def test_statistics_tables_group_by_part_and_label_each_correlation() -> None:
    row = dict(dataset="D", r=0.5, ci_low=0.1, ci_high=0.77777, p=0.01, n=12)
    zoo = pd.DataFrame([{**row, "part": "zoo", "x": "ImageNet top-1, same 200 classes", "scale": "probit",
                         "subset": "all", "method": "pearson"}])
    tl = pd.DataFrame([{**row, "part": "fine-tuning (tllib)", "x": "ImageNet top-1 (timm)", "scale": "accuracy (%)",
                        "subset": "joined in timm", "method": "spearman"}])
    (t1, zoo_rows), (t2, tl_rows) = ch.statistics_tables(zoo, tl, ch.finetune_statistics(None))
    assert (t1, t2) == ("timm zoo: ImageNet variants under distribution shift (not other data sets)",
                        "fine-tuning (tllib)")
    assert zoo_rows.index.tolist() == [("D", "Pearson, probit, x: top-1, same 200 classes")]
    assert tl_rows.index.tolist() == [("D", "Spearman, accuracy, joined in timm, x: top-1, timm")]
    assert tl_rows.ci_high.item() == 0.778


def test_probe_noise_text_states_n_and_the_binomial_sd_of_one_score() -> None:
    acc = np.array([[50.0, 90.0], [50.0, 90.0], [80.0, 90.0]])
    pr = xr.Dataset({"accuracy": (("model", "dataset"), acc)},
                    coords={"model": ["a", "b", "c"], "dataset": ["A", "B"], "weights": ("model", ["pretrained"] * 3)},
                    attrs={"parameters": '{"n_test": 100}'})
    sd_a = 100 * math.sqrt((0.25 + 0.25 + 0.16) / 3 / 100)  # √(mean a(1 − a) / n) in points
    assert ch.probe_noise_text(pr).startswith(
        f"Each probe score is the accuracy on n = 100 test images of one data set. At that n, one score has a "
        f"binomial SD, √(a(1 − a)/n) at the models' accuracies, of {sd_a:.1f} points on A and 3.0 points on B; "
        f"the SD of the scores across the 3 models is 17.3 points on A and 0.0 points on B.")


def test_outlook_and_skip_texts() -> None:
    pr = xr.Dataset(coords={"model": ["a", "b", "c", "a (random init)"],
                            "weights": ("model", ["pretrained"] * 3 + ["random"])})
    text = ch.outlook_text(pr)
    assert text.startswith("The `full` profile probes 21 models, 18 of them from timm's pretrained zoo")
    assert "on 10,000 training images per data set" in text and "for 3 epochs" in text
    assert "which with 3 models are wide" in text
    assert text.endswith("The `full` profile has not been run here: there are no `full` results.")
    assert ch.skipped_text("default") == "profile 'default': fine-tuning skipped (run the full profile on a GPU)"


@pytest.mark.data
def test_probe_table_shows_a_dash_where_a_network_has_no_imagenet_top1(data_root) -> None:
    pr = store.load("dataset_correlation_probes_default", REPO / "data" / "results")
    table = ch.probe_table(pr)
    random = pr.weights.values == "random"
    assert random.any() and (table["ImageNet top-1"][random] == "—").all()
    assert table["ImageNet top-1"][~random].tolist() == np.round(pr.top1.values[~random], 1).tolist()
    assert list(table.columns[-3:]) == ["ImageNet top-1", "family", "kind"]


def test_kornblith_note_reads_both_abstract_versions_from_the_table() -> None:
    note = ch.kornblith_note()
    assert "r² = 0.24 over 13 networks earlier, r = 0.99 over 16 published" in note
    assert note.endswith("fine-tuned r = 0.96 only.")


@pytest.mark.data
def test_the_statistics_table_and_figure_lead_with_the_primary_statistic(data_root) -> None:
    import matplotlib

    matplotlib.use("Agg")
    tl = store.load("dataset_correlation_tllib_default", REPO / "data" / "results")
    st = ch.tllib_statistics(tl)
    first, pooled = st.iloc[0], ch.tllib_overall(tl, 0)["pooled"]
    assert (first.r, first.ci_low, first.ci_high) == pytest.approx((pooled["r"], pooled["ci_low"], pooled["ci_high"]))
    assert (st.scale == first.scale).sum() == 1 and first.dataset == "all 8"
    fig = ch.tllib_figure(tl, st)
    assert len(fig.axes) == 9 and fig.axes[0].get_title().startswith("primary test")
    assert f"r = {pooled['r']:.2f}" in fig.axes[0].get_title()
