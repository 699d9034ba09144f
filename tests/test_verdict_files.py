"""The stored `default` verdicts, recomputed independently from their stored inputs with scipy (not through
`tradeoffs.stats`), a planted error that must flip an outcome, and the provenance of every stored file."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from pathlib import Path

from tradeoffs import claims, store, verdicts

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "data" / "results"


def stored(name: str) -> xr.Dataset:
    return store.load(name, STORED)


def fisher_ci(r: float, n: int, se_num: float = 1.0) -> tuple[float, float]:
    half = sps.norm.ppf(0.975) * math.sqrt(se_num / (n - 3))
    return math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)


def test_every_declared_test_is_stored() -> None:
    for claim_id, claim in claims.CLAIMS.items():
        ds = stored(claims.result_name(claim_id, "verdict", "default"))
        assert list(ds.test.values) == [t.id for t in claim.tests], claim_id
        assert ds.attrs["primary_test"] == claim.primary("default").id
        assert ds.attrs["verdict"] == ds["outcome"].sel(test=ds.attrs["primary_test"]).item()
        for t in ds.test.values:  # no badge where a gate failed or the interval is degenerate
            row = ds.sel(test=t)
            failed = [g for g in verdicts.gates_of(ds, str(t)) if not g["passed"]]
            lo, hi = float(row.ci_low), float(row.ci_high)
            if failed or not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                assert row["outcome"].item() not in ("supported", "not supported"), (claim_id, t)


def test_tllib_primary_recomputed_with_scipy() -> None:
    tl = stored("dataset_correlation_tllib_default")
    acc = np.clip(tl.finetuned_acc.transpose("model", "dataset").values / 100, 1e-3, 1 - 1e-3)
    y = np.log(acc / (1 - acc)).mean(1)
    res = sps.pearsonr(tl.top1.values, y)
    lo, hi = res.confidence_interval()
    row = stored("dataset_correlation_verdict_default").sel(test="tllib")
    assert float(row.estimate) == pytest.approx(res.statistic, abs=1e-9)
    assert (float(row.ci_low), float(row.ci_high)) == pytest.approx((lo, hi), abs=1e-9)
    spec = claims.claim("dataset_correlation").test("tllib")
    planted = sps.pearsonr(tl.top1.values, -y)  # y negated: the outcome must flip
    flipped = verdicts.Measured(planted.statistic, *planted.confidence_interval(), len(y), gates={"enough_n": len(y)})
    kept = verdicts.Measured(res.statistic, lo, hi, len(y), gates={"enough_n": len(y)})
    assert verdicts.outcome(spec, kept, "default") == row["outcome"].item() == "supported"
    assert verdicts.outcome(spec, flipped, "default") == "not supported"


def test_error_consistency_rows_recomputed_with_scipy() -> None:
    obs = stored("human_alignment_observers_default")
    real = obs.sel(observer=((obs["kind"] == "model") & (obs["weights"] == "pretrained")).values)
    v = stored("human_alignment_verdict_default")
    for d in real.dataset.values:
        x, y = real.top1.values, real.error_consistency_mean.sel(dataset=d).values
        r = sps.spearmanr(x, y).statistic
        row = v.sel(test=f"ec_{str(d).replace('-', '_')}")
        assert float(row.estimate) == pytest.approx(r, abs=1e-12)
        assert (float(row.ci_low), float(row.ci_high)) == pytest.approx(fisher_ci(r, len(x), 1 + r * r / 2), abs=1e-9)


def test_anynetx_primary_recomputed_with_scipy() -> None:
    runs = stored("anynetx_subsets_runs_default")
    acc = runs["test_accuracy"].isel(seed=0).to_pandas()
    role = dict(zip(runs.dataset.values, runs.role.values))
    src = [d for d in acc.columns if role[d] == "source"]
    tgt = [d for d in acc.columns if role[d] == "target"]
    diff = np.mean([sps.spearmanr(acc[src[0]], acc[t]).statistic - sps.spearmanr(acc[src[-1]], acc[t]).statistic
                    for t in tgt])
    row = stored("anynetx_subsets_verdict_default").sel(test="subset_diff")
    assert float(row.estimate) == pytest.approx(diff, abs=1e-12)
    boot = sps.bootstrap((np.arange(len(acc)),), lambda i: np.mean(
        [sps.spearmanr(acc[src[0]].values[i], acc[t].values[i]).statistic
         - sps.spearmanr(acc[src[-1]].values[i], acc[t].values[i]).statistic for t in tgt]),
        n_resamples=999, method="BCa", vectorized=False, rng=np.random.default_rng(0)).confidence_interval
    assert float(row.ci_low) <= boot.low + 0.05 and float(row.ci_high) >= boot.high - 0.05, \
        "our expanded BCa interval should contain scipy's BCa interval (up to resampling noise)"


def test_early_stopping_primary_recomputed() -> None:
    es = stored("early_stopping_default")
    es = es.isel(epoch=np.flatnonzero(es.epoch.values > 0))
    gains = []
    for m in es.model.values:
        for s in es.seed.values:
            kl, acc = -es.kl_half.sel(model=m, seed=s), es.accuracy_half.sel(model=m, seed=s)
            folds = [float(kl.sel(half=j).isel(epoch=int(kl.sel(half=c).argmax())) -
                           kl.sel(half=j).isel(epoch=int(acc.sel(half=c).argmax())))
                     for c, j in (("even", "odd"), ("odd", "even"))]
            gains.append(np.mean(folds))
    ci = sps.ttest_1samp(gains, 0).confidence_interval()
    row = stored("early_stopping_verdict_default").sel(test="kl_held_out")
    assert float(row.estimate) == pytest.approx(np.mean(gains), abs=1e-12)
    assert (float(row.ci_low), float(row.ci_high)) == pytest.approx((ci.low, ci.high), abs=1e-12)
    tail = es.accuracy.isel(epoch=slice(-5, None)).transpose("epoch", ...).values.reshape(5, -1)
    plateau = 100 * 4 * float(np.abs(np.polyfit(np.arange(5.0), tail, 1)[0]).max())  # straight-line change
    assert float(row.gate_measured.sel(gate="plateau")) == pytest.approx(plateau)


def test_stored_results_come_from_committed_code() -> None:
    """Every stored result from a clean tree; verdict files also a commit in this history, never older than the
    results they summarise."""
    dirty = [p.stem for p in sorted(STORED.glob("*.nc")) if int(stored(p.stem).attrs["git_dirty"])]
    assert not dirty, f"computed from a dirty tree: {dirty} (recompute them from a clean checkout)"
    for claim_id in claims.CLAIMS:
        v = stored(claims.result_name(claim_id, "verdict", "default"))
        assert int(v.attrs["git_dirty"]) == 0, f"{claim_id}: verdict computed from a dirty tree"
        commit = v.attrs["git_commit"]
        known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO, capture_output=True)
        if known.returncode != 0:
            pytest.skip("this checkout has no git history (the commit cannot be looked up)")
        inputs = json.loads(v.attrs.get("inputs_created", "[]"))
        assert inputs and max(inputs) <= v.attrs["created_utc"], f"{claim_id}: verdict older than its inputs"
