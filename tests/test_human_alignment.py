"""The human-alignment chapter's stored default results: labelled, with provenance, and reproducible on a rerun."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tradeoffs import claims, data, metrics, models, observers, results, store
from tradeoffs.errors import TradeoffsError

PROFILE = "default"
PARTS = ("trials", "observers", "cifar10h", "harmonization", "verdict")
RERUN_MODEL = "mobilenet_v1_0.25_128_quant"  # the fastest offline ImageNet model
SHAPE_BIAS_ATOL = 0.01  # stated tolerance for a rerun on another CPU/BLAS build (decisions can flip at near-ties)
# Share of the 1,280 decisions that must agree with the stored run. LiteRT's integer kernels differ between CPU
# families by one quantisation step at some outputs; an AMD EPYC rerun of results stored on another x86 machine
# agreed on 98.7% (17 near-ties flipped), while the shape bias moved by 0.0003.
AGREEMENT = 0.975


def stored(part: str):
    """The committed default results file of `part` (from data/results, whatever TRADEOFFS_RESULTS says)."""
    root = results.repo_root()
    folder = root / "data" / "results" if root else None
    try:
        return store.load(f"human_alignment_{part}_{PROFILE}", folder)
    except TradeoffsError:
        pytest.skip(f"no stored human_alignment_{part}_{PROFILE}.nc; run the notebook on the default profile")


@pytest.mark.parametrize("part", PARTS)
def test_stored_results_have_provenance(part):
    ds = stored(part)
    for key in ("git_commit", "versions", "device", "created_utc", "elapsed_s", "parameters", "tolerance"):
        assert key in ds.attrs, key
    assert ds.attrs["profile"] == PROFILE and float(ds.attrs["elapsed_s"]) >= 0
    assert json.loads(ds.attrs["parameters"])["seed"] == 0
    if part != "verdict":
        assert len(ds.attrs["inputs_key"]) == 64


def test_stored_observers_are_labelled():
    ds = stored("observers")
    assert ds["accuracy"].dims == ("observer", "dataset") and ds["error_consistency_mean"].dims == ("observer", "dataset")
    assert set(ds["dataset"].values) == set(data.STIMULUS_SETS)
    kind, weights = ds["kind"].values, ds["weights"].values
    assert (kind == "human").sum() == 10 and set(weights[kind == "human"]) == {""}
    real = (kind == "model") & (weights == "pretrained")
    assert real.sum() >= 11 and np.isfinite(ds["top1"].values[real]).all()
    assert np.isnan(ds["top1"].values[weights == "random"]).all() and (weights == "random").sum() == 2
    # our human numbers, recomputed from all trials, against model-vs-human/SOURCES.md §6 and Geirhos et al. 2019
    assert float(ds["shape_bias_humans_pooled"]) == pytest.approx(0.9587, abs=5e-5)
    assert float(ds["shape_bias"].where(ds["kind"] == "human").mean()) == pytest.approx(0.9576, abs=5e-5)
    people = ds["error_consistency_mean"].where(ds["kind"] == "human")
    models_ = ds["error_consistency_mean"].where(ds["weights"] == "pretrained")
    assert (people.mean("observer") > models_.mean("observer")).all()  # people agree with people more than models do


def test_stored_trials_cover_every_stimulus():
    ds = stored("trials")
    counts = {d: int((ds["dataset"] == d).sum()) for d in data.STIMULUS_SETS}
    assert counts == {"cue-conflict": 1280, "edge": 160, "silhouette": 160}
    assert set(np.unique(ds["response"].values)) <= set(data.imagenet_16class_indices())


def test_stored_harmonization_reads_the_table_as_published():
    """The claimants' own table, re-analysed: matching the check noted with it is a reading check, not a test."""
    ds = stored("harmonization")
    assert float(ds["spearman_r"].sel(side="all")) == pytest.approx(-0.654, abs=5e-4)  # tables/SOURCES.md §2
    assert int(ds["spearman_n"].sel(side="all")) == ds.sizes["model"] == 552
    lo, hi = float(ds["quadratic_vertex_ci_low"]), float(ds["quadratic_vertex_ci_high"])
    assert lo <= float(ds["quadratic_vertex_x"]) <= hi


def test_stored_verdict_declares_every_test():
    ds = stored("verdict")
    assert list(ds["test"].values) == [t.id for t in claims.claim("human_alignment").tests]
    assert int(ds["primary"].sum()) == 1 and ds.attrs["primary_test"] == "serre_table"


@pytest.mark.data
def test_shape_bias_reproduces_on_rerun(data_root, isolated):
    """Recompute one model's cue-conflict decisions from scratch (empty cache) and compare with the stored ones."""
    trials_ds, obs = stored("trials"), stored("observers")
    if RERUN_MODEL not in trials_ds["observer"].values:
        pytest.skip(f"{RERUN_MODEL} is not among the stored observers")
    human = data.human_trials("cue-conflict")
    fresh = observers.model_trials(models.load(RERUN_MODEL), "cue-conflict", human, cache=False, progress=False)
    old = observers.dataset_to_trials(trials_ds.sel(observer=[RERUN_MODEL]))
    old = old[old["dataset"] == "cue-conflict"]
    merged = fresh.merge(old, on=["condition", "image"], suffixes=("", "_stored"), validate="one_to_one")
    assert len(merged) == len(fresh) == 1280
    assert (merged["response"] == merged["response_stored"]).mean() >= AGREEMENT
    stored_bias = float(obs["shape_bias"].sel(observer=RERUN_MODEL))
    assert metrics.shape_bias(fresh) == pytest.approx(stored_bias, abs=SHAPE_BIAS_ATOL)


@pytest.mark.data
@pytest.mark.slow
def test_cifar10h_reproduces_on_rerun(data_root, isolated):
    ds = stored("cifar10h")
    fresh = observers.cifar10h_alignment(models.load("cifar10_resnet20"), progress=False)
    row = ds.sel(model="cifar10_resnet20")
    for key in ("accuracy", "kl", "cross_entropy", "top1_agreement", "entropy_spearman"):
        assert fresh[key] == pytest.approx(float(row[key]), rel=1e-3, abs=1e-4), key
