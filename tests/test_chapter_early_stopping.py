"""The early-stopping chapter module: settings, the per-run table, what the verdict judges, and the page's sentences."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from tradeoffs import stats, store
from tradeoffs.chapters import early_stopping as ch
from tradeoffs.errors import TradeoffsError

STORED = Path(__file__).resolve().parents[1] / "data" / "results"
EPOCHS = np.arange(7)
ACCURACY = np.array([0.1, 0.5, 0.6, 0.65, 0.66, 0.665, 0.67])  # best at the last epoch


def synthetic(bapps: bool = False) -> xr.Dataset:
    """One model, 3 seeds, epochs 0–6, both halves alike: calibrated KL lowest at epoch 2 with a curvature that grows
    with the seed, raw KL lowest at epoch 3 + seed, the NN score following accuracy."""
    seeds = np.arange(3)
    e, s = EPOCHS[None, :], seeds[:, None]
    measures = {"accuracy": ACCURACY + 0.001 * s, "kl": 1 + 0.1 * (e - 3 - s) ** 2,
                "kl_calibrated": 1 + (0.05 + 0.01 * s) * (e - 2) ** 2, "nn_human_prob": ACCURACY + 0 * s}
    if bapps:
        measures["ps"] = 0.6 + 0.01 * (e == 1) + 0 * s  # best at epoch 1, 1 PS point above the rest
    dims = ("model", "seed", "epoch")
    ds = xr.Dataset({k: (dims, v[None]) for k, v in measures.items()},
                    coords={"model": ["net"], "seed": seeds, "epoch": EPOCHS})
    for k, v in measures.items():
        ds[f"{k}_half"] = xr.concat([ds[k], ds[k]], dim="half").assign_coords(half=list(ch.HALVES))
    ds.attrs.update(n_train=800, n_eval=401, data_source="jpeg", device="cpu", elapsed_s=600.0,
                    train_seconds=json.dumps({"net/seed 0": 60.0, "net/seed 1": 30.0}))
    return ds


def test_settings_resolve_the_profile() -> None:
    assert ch.settings("default", {}) == ch.PROFILES["default"]
    P = ch.settings("smoke", {"epochs": 5, "models": None, "device": "cpu", "unrelated": 1})
    assert P["epochs"] == 5 and P["models"] == ch.PROFILES["smoke"]["models"] and P["device"] == "cpu"
    assert "unrelated" not in P
    with pytest.raises(TradeoffsError, match="unknown profile"):
        ch.settings("huge", {})


def test_runs_table_best_epochs_and_held_out_gains() -> None:
    best = ch.runs(synthetic())
    assert best["best accuracy epoch"].tolist() == [6, 6, 6]
    assert best["best calibrated-KL epoch"].tolist() == [2, 2, 2]
    assert best["best KL epoch"].tolist() == [3, 4, 5]
    assert best["best accuracy"].to_numpy() == pytest.approx([0.67, 0.671, 0.672])
    late = best.filter(like="last 5 epochs")
    assert list(late.columns) == [
        "accuracy change over the last 5 epochs, straight-line fit (points; the plateau gate)",
        "accuracy range over the last 5 epochs, max − min (points; not the gate)"]
    assert late.iloc[:, 1].to_numpy() == pytest.approx([7.0] * 3)
    assert late.iloc[:, 0].max() == pytest.approx(ch.measured(synthetic(), best)["calibrated_kl_before"].gates["plateau"])
    # calibrated KL at epoch 6 minus at epoch 2: (0.05 + 0.01 s) × 16
    assert best["held-out calibrated-KL reduction (nats)"].to_numpy() == pytest.approx([0.8, 0.96, 1.12])
    assert best["held-out NN-human gain"].to_numpy() == pytest.approx([0, 0, 0])
    # the best calibrated-KL epoch (2) comes before the best-accuracy one (6): the restricted choice is the same
    restricted = best["held-out calibrated-KL reduction, no later than best accuracy (nats)"]
    assert restricted.to_numpy() == pytest.approx([0.8, 0.96, 1.12])
    assert best["calibrated-KL lead (epochs)"].tolist() == [4, 4, 4]
    assert "held-out PS gain" not in best


def test_a_kl_that_keeps_falling_past_the_accuracy_peak_gains_nothing_before_it() -> None:
    ds = synthetic()
    ds["kl_calibrated_half"] = ds.kl_calibrated_half * 0 + 2 - 0.1 * ds.epoch  # lowest at the last epoch
    ds["accuracy_half"] = ds.accuracy_half.where(ds.epoch != 6, 0.6)  # most accurate at epoch 5
    best = ch.runs(ds)
    assert best["held-out calibrated-KL reduction, no later than best accuracy (nats)"].tolist() == [0, 0, 0]
    assert best["held-out calibrated-KL reduction (nats)"].to_numpy() == pytest.approx([0.1] * 3)
    assert best["calibrated-KL lead (epochs)"].tolist() == [-1, -1, -1]


def test_measured_means_over_runs_with_the_plateau_gate() -> None:
    ds = synthetic()
    m = ch.measured(ds, ch.runs(ds))
    assert set(m) == {"calibrated_kl_before", "calibrated_kl_held_out", "kl_held_out", "nn_held_out",
                      "calibrated_kl_lead"}
    ci = sps.ttest_1samp([0.8, 0.96, 1.12], 0).confidence_interval()
    assert (m["calibrated_kl_held_out"].estimate, m["calibrated_kl_held_out"].n) == (pytest.approx(0.96), 3)
    assert (m["calibrated_kl_held_out"].ci_low, m["calibrated_kl_held_out"].ci_high) == pytest.approx(ci)
    assert m["calibrated_kl_before"].estimate == pytest.approx(0.96)
    assert m["calibrated_kl_lead"].estimate == pytest.approx(4.0) and math.isnan(m["calibrated_kl_lead"].ci_low)
    assert m["nn_held_out"].estimate == 0 and math.isnan(m["nn_held_out"].ci_low)  # every run the same
    curves = ds.accuracy.sel(epoch=ds.epoch > 0).values.reshape(3, -1)
    plateau = 100 * stats.late_change(curves, last=5)
    assert all(v.gates == {"plateau": pytest.approx(plateau)} for v in m.values())


def test_measured_adds_bapps_when_scored() -> None:
    ds = synthetic(bapps=True)
    best = ch.runs(ds)
    assert best["held-out PS gain"].to_numpy() == pytest.approx([1.0, 1.0, 1.0])  # PS points (×100)
    assert ch.measured(ds, best)["bapps_held_out"].estimate == pytest.approx(1.0)
    assert ch.measured(ds, best)["bapps_before"].estimate == pytest.approx(1.0)  # the PS peak (1) precedes 6


def test_data_text() -> None:
    expected = "800 training images (jpeg), 401 test images scored (200 references, 201 queries)"
    assert ch.data_text(synthetic()) == expected


def test_accuracy_text_states_every_run() -> None:
    text = ch.accuracy_text(synthetic())
    assert "at its last epoch (6)" in text
    assert "net seed 0: 0.670 (best 0.670); net seed 1: 0.671 (best 0.671); net seed 2: 0.672 (best 0.672)" in text
    assert "(3 runs, 401 CIFAR-10 test images, JPEG copy; chance is 0.10)" in text


def test_kl_text_measures_the_temperature_share() -> None:
    ds = synthetic()
    ds["kl_calibrated"] = ds.kl - 0.01 * ds.epoch  # temperature accounts for 0.01 nats per epoch: 0.06 at epoch 6
    text = ch.kl_text(ds)
    assert "the primary test uses the temperature-scaled KL" in text
    assert "at most 0.06 nats of the raw KL over epochs 1–6" in text
    # mean raw KL over seeds 0, 1, 2 (lowest at epoch 3, 4, 5): 1 + 0.1 × mean (1 − 3 − s)² minus at epoch 6
    fall = 0.1 * (np.mean([4, 9, 16]) - np.mean([9, 4, 1]))
    assert f"falls by {fall:.2f} nats from epoch 1 to 6 (means over 3 runs, 401 CIFAR-10 test images)" in text


def test_measured_reproduces_the_stored_verdict() -> None:
    ds = store.load("early_stopping_default", STORED)
    verdict = store.load("early_stopping_verdict_default", STORED)
    for test, m in ch.measured(ds, ch.runs(ds)).items():
        row = verdict.sel(test=test)
        assert (m.estimate, m.ci_low, m.ci_high, m.n) == pytest.approx(
            (float(row.estimate), float(row.ci_low), float(row.ci_high), int(row.n)), abs=1e-12), test
        assert m.gates["plateau"] == pytest.approx(float(row.gate_measured.sel(gate="plateau")), abs=1e-12)


@pytest.mark.data
def test_summary_text(data_root: Path) -> None:
    ds = synthetic()
    text = ch.summary_text(ds, ch.runs(ds))
    assert "peaks at 69.7 in the first few epochs" in text
    assert "trained from scratch on 800 images for 6 epochs" in text
    assert "reaches 0.67 at best (lowest run: 0.67; 3 runs, 401 CIFAR-10 test images)" in text
    assert "Training the 3 runs took 1.5 min in all on cpu; with the scoring of every checkpoint, 10 min." in text
    ds.attrs["elapsed_s"] = 30.0
    assert "scored every one in 0 min" in ch.summary_text(ds, ch.runs(ds))


def test_position_text_says_where_the_checkpoints_lie() -> None:
    ds = synthetic()
    text = ch.position_text(ds, ch.runs(ds))
    assert "2/6, 2/6, 2/6 (of 6)" in text and "4.0 epochs before the most" in text and "n = 3 runs" in text
    assert "Per run: +0.8000, +0.9600, +1.1200 nats (mean +0.9600; its 95% upper bound" in text
    assert "comes later, not earlier" not in text


def test_rerun_text_and_the_declared_spread_match_the_stored_rerun() -> None:
    """RERUN_SPREAD is the measured spread between the two stored trainings (rounded up, at most by 10%)."""
    ds, rerun = store.load("early_stopping_default", STORED), ch.load_rerun("default")
    assert rerun is not None and ch.load_rerun("smoke") is None
    ours = ds.sel(seed=rerun.seed.values)
    for name, declared in ch.RERUN_SPREAD.items():
        spread = float(np.nanmax(np.abs(rerun[name].values - ours[name].values)))
        assert spread <= declared <= 1.1 * spread, name
    text = ch.rerun_text(ds, rerun, "default")
    assert "seeds 0–2" in text and "commit eea91bf" in text and "the same outcome as above" in text
    assert ch.rerun_text(ds, None, "smoke") == ""
    assert store.compare(ds, ds.assign(accuracy=ds.accuracy + 0.06).assign_attrs(
        tolerance=json.dumps(ch.TOLERANCE))) == []
