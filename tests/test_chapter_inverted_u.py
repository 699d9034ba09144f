"""The inverted-U chapter module: settings, the CIFAR-10 points, and the sentences and measured values it builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tradeoffs import perceptual, stats, store
from tradeoffs.chapters import inverted_u as ch
from tradeoffs.errors import TradeoffsError


def test_settings_resolve_the_profile_and_keep_it_where_a_parameter_is_none():
    p = ch.settings("default", {"n_eval": None, "n_query": 10, "device": "cpu", "seed": 3})
    assert p["n_eval"] == 2000 and p["n_query"] == 10 and p["cifar_models"] == ch.PRETRAINED_CIFAR
    assert p["device"] == "cpu" and p["seed"] == 3
    assert ch.settings("smoke", {})["cifar_models"] == ch.PRETRAINED_CIFAR[:2]
    with pytest.raises(TradeoffsError, match="unknown profile 'tiny'"):
        ch.settings("tiny", {})


def _cifar(acc: list[float]) -> xr.Dataset:
    models = [f"cifar10_resnet{d}" for d in (20, 32, 44, 56)][:len(acc)]
    return xr.Dataset({"accuracy": ("model", acc), "kl": ("model", [2.0] * len(acc)),
                       "kl_calibrated": ("model", [0.5] * len(acc)), "nn_human_prob": ("model", [0.8] * len(acc))},
                      coords={"model": models}, attrs={"n_eval": 400})


def _early() -> xr.Dataset:
    shape = (1, 2, 3)  # model, seed, epoch (epoch 0 is the untrained network)
    return xr.Dataset({"accuracy": (("model", "seed", "epoch"), np.full(shape, 0.7)),
                       "kl_calibrated": (("model", "seed", "epoch"), np.full(shape, np.e)),
                       "nn_human_prob": (("model", "seed", "epoch"), np.full(shape, 0.6))},
                      coords={"model": ["cifar10_resnet8"], "seed": [0, 1], "epoch": [0, 1, 2]})


def test_cifar_points_join_pretrained_models_and_checkpoints_after_epoch_zero():
    points = ch.cifar_points(_cifar([0.91, 0.92]), _early())
    assert len(points) == 2 + 2 * 2 and points["unit"].nunique() == 2 + 2
    assert set(points["source"]) == {"pretrained (Idelbayev)", "resnet8 checkpoints (trained here)"}
    np.testing.assert_allclose(points["alignment"], -np.log(points["kl"]))
    assert points.loc[points["source"] != "pretrained (Idelbayev)", "alignment"].eq(-1).all()
    alignment = xr.Dataset(coords={"n": ("model", [10_000, 10_000])}, attrs={"parameters": '{"n_cifar": null}'})
    text = ch.points_text(points, _cifar([0.91, 0.92]), "", alignment)
    assert text.startswith("6 CIFAR-10 points: 2 pretrained models and 4 checkpoints of 2 runs. ")
    assert ("the first 400 CIFAR-10 test images, the images the early-stopping checkpoints are scored on, so that "
            "pretrained models and checkpoints are compared on the same images. The human-alignment page scores the "
            "same pretrained ResNets on all 10,000 CIFAR-10 test images, so its") in text
    assert "(2.000–2.000 for the 2 pretrained ResNets, 0.500–0.500 after temperature scaling)" in text
    missing = ch.points_text(points, _cifar([0.91, 0.92]), "no checkpoints", None)
    assert missing.startswith("no checkpoints. Every CIFAR-10 number on this page comes from the first 400 CIFAR-10 "
                              "test images. The human-alignment page has no stored scores")
    assert len(ch.cifar_points(_cifar([0.91, 0.92]), None)) == 2


def _distances(n_image: int = 40, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (2, len(perceptual.DISTANCES), n_image)
    correct = (rng.uniform(size=shape) < 0.6).astype(float)
    share = np.clip(correct * 0.9 + rng.uniform(0, 0.1, shape), 0, 1)
    dims = ("model", "distance", "image")
    return xr.Dataset({"nn_human_prob": (dims, share), "nn_plausible": (dims, (share > 0.5).astype(float)),
                       "nn_correct": (dims, correct)},
                      coords={"model": ["cifar10_resnet20", "cifar10_resnet32"],
                              "distance": list(perceptual.DISTANCES), "image": np.arange(n_image)},
                      attrs={"n_reference": 200})


def _curves(seed: int = 1) -> ch.Curves:
    rng = np.random.default_rng(seed)
    units = np.repeat([f"run {k}" for k in range(12)], 2)
    x = pd.Series(np.sort(rng.uniform(0.5, 0.95, len(units))))
    return {ch.CIFAR: (x, pd.Series(-(x - 0.8) ** 2 + rng.normal(0, 0.01, len(x))), pd.Series(units))}


def test_measured_carries_the_declared_tests_and_their_gates():
    curves, dist = _curves(), _distances()
    tests = ch.judged(curves, {ch.CIFAR: {}}, {"seed": 0})
    comparisons = ch.compare_distances(dist)
    k = ch.Kumar(*([None] * 5), {"estimate": 1.5, "ci_low": 0.5, "ci_high": 2.5, "n": 22}, None)
    m = ch.measured(k, curves, tests, dist, comparisons)
    assert set(m) == {"kumar_table1", "meanpool_vs_lpips", "cifar10h_beyond", "cifar10h_slope"}
    assert m["kumar_table1"].estimate == 1.5 and np.isnan(m["kumar_table1"].gates["selection_null"])
    gap = 100 * stats.largest_gap(curves[ch.CIFAR][0])
    split = stats.beyond_optimum_split(*curves[ch.CIFAR], seed=0)
    assert m["cifar10h_beyond"].estimate == pytest.approx(split["r"])
    assert m["cifar10h_beyond"].gates == {"enough_n": split["n"], "units_beyond": split["units_beyond"], "no_gap": gap}
    assert m["cifar10h_slope"].gates["units"] == 12 and m["cifar10h_slope"].n == 12
    pooled = stats.paired_difference(dist["nn_human_prob"].sel(distance="mean_pool").mean("model").values,
                                     dist["nn_human_prob"].sel(distance="lpips_untrained").mean("model").values)
    assert m["meanpool_vs_lpips"].estimate == pytest.approx(pooled["estimate"])
    expected = np.mean(np.abs(dist["nn_human_prob"].values.mean(-1) - dist["nn_correct"].values.mean(-1)))
    assert m["meanpool_vs_lpips"].gates["not_retrieval"] == pytest.approx(expected)
    assert len(comparisons) == 2 * (1 + 2)  # mean-pool and Gram: over the model mean, then per model


@pytest.mark.data
def test_kumar_sentences_from_the_transcribed_tables(data_root, isolated):
    k = ch.kumar({"seed": 0}, "default")
    t1 = pd.read_csv(data_root / "tables/published/kumar2022_table1_scaling_down.csv").set_index("model")
    cells = t1.filter(like="delta_").stack().dropna()
    text = ch.table1_text(k)
    assert text.startswith(f"Table 1 has {len(cells)} filled cells")
    assert f"{int((cells > 0).sum())} improve PS" in text and f"mean gain is {cells.mean():+.2f} PS points" in text
    assert "the rows add up" in text and k.stored["delta_ps"].shape == (5, 5)
    assert "(ViT B/8 excepted)" in text and "names ViT L/4 as the one model" in text
    assert "the transcribed values support ViT B/8, not ViT L/4" in text
    assert "ViT B/8 gains most from weight decay (+1.3; training steps +1.1)" in text
    assert "ViT L/4 gains most from fewer training steps (+0.5)" in text
    assert "ranges from 65 to 69.7; the range maximum (69.7) is also the early-epoch peak" in text
    assert k.mean_gain["n"] == 5 and k.mean_gain["estimate"] == pytest.approx(cells.mean())  # over 5 models


@pytest.mark.data
def test_summary_names_the_fit_and_the_distance_comparison(isolated):
    k = ch.kumar({"seed": 0}, "default")
    points = ch.cifar_points(_cifar([0.91, 0.92, 0.93, 0.94]), None)
    curves, dist = _curves(), _distances()
    fits = ch.fit(curves, {"n_boot": 200, "seed": 0})
    comparisons = ch.compare_distances(dist)
    text = ch.summary_text(k, curves, fits, dist, comparisons, _cifar([0.91, 0.92, 0.93, 0.94]), points)
    cells = k.cells
    assert f"raised PS in {int((cells > 0).sum())} of {len(cells)} Table-1 settings" in text
    assert f"**{ch.CIFAR}** (24 points, 12 independent units; the first 400 CIFAR-10 test images)" in text
    assert f"mean-pool minus LPIPS-style: {comparisons.loc[ch.POOLED, 'estimate']:+.3f}" in text
    assert f"sits within {ch.retrieval_gap(dist):.3f} of plain 1-NN accuracy" in text
    assert "(2 models × 3 distances, 40 query images against 200 references)" in text
    assert "n = 40 query images, mean over the 2 models" in text
    assert "ResNet-6 at default training scored PS 69.7 with the mean-pool distance vs 69.1" in text
    assert "Scored here: 4 pretrained CIFAR-10 ResNets plus 0 training runs, on the first 400 CIFAR-10" in text


def test_bapps_text_says_what_full_would_run_and_that_it_has_not(isolated):
    text = ch.bapps_not_run_text("default")
    assert f"score {len(ch.BAPPS_ZOO)} timm models ({ch.BAPPS_ZOO[0]} to {ch.BAPPS_ZOO[-1]}" in text
    assert "first 10,000 test images" in text and text.endswith("it has not been run here: there are no `full` results.")


def test_offline_limit_text_reads_the_stored_verdict() -> None:
    v = store.load("inverted_u_verdict_default", Path(__file__).resolve().parents[1] / "data" / "results")
    text = ch.offline_limit_text(v)
    slope = v.sel(test="cifar10h_slope")
    units = int(v.sel(test=v.attrs["primary_test"]).gate_measured.sel(gate="units_beyond"))
    assert f"slope at the top is {float(slope.estimate):+.2f}" in text and f"with {units} independent unit(s)" in text
    flat = v.copy(deep=True)
    flat["ci_low"].loc["cifar10h_slope"] = -1.0  # a slope whose interval reaches below 0: units are what is missing
    assert "more training runs" in ch.offline_limit_text(flat)
    testable = v.copy(deep=True)
    testable["outcome"].loc[v.attrs["primary_test"]] = "supported"
    assert ch.offline_limit_text(testable) == ""
