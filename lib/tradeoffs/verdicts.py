"""Each claim's verdict rows, stored beside its results so the book's summary is generated, never typed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import results, stats
from .errors import TradeoffsError

CLAIMS = {
    "human_alignment": "Past a point, more accurate ImageNet models are less aligned with human visual strategies.",
    "inverted_u": "Beyond an optimum, higher ImageNet accuracy gives worse perceptual similarity scores.",
    "early_stopping": "The best perceptual / human-aligned checkpoint comes before the most accurate one.",
    "dataset_correlation": "ImageNet accuracy predicts accuracy on other datasets.",
    "anynetx_subsets": "Across AnyNetX architectures, ImageNet subsets with fewer classes correlate better with other datasets.",
}


@dataclass(frozen=True)
class Test:
    """One statistical test behind a verdict: an estimate with its 95% CI and the sign the claim predicts."""

    name: str            # short label, e.g. "Spearman(top-1, shape bias), ImageNet models"
    statistic: str       # what the estimate is, e.g. "Spearman rho"
    estimate: float
    ci_low: float
    ci_high: float
    expected_sign: int   # +1 or -1: the direction the claim predicts
    n: int
    setting: str         # "offline proxy: ..." or "paper's setting"
    paper: str           # the paper's own number for this quantity, cited, e.g. "r = -0.84 (Kumar et al. 2022, Sec. 5)"
    p: float = math.nan

    @property
    def verdict(self) -> str:
        return stats.verdict(self.ci_low, self.ci_high, self.expected_sign)


def to_dataset(claim: str, tests: Sequence[Test]) -> xr.Dataset:
    """The verdict rows of one claim as a Dataset with a `test` dimension."""
    if claim not in CLAIMS:
        raise TradeoffsError(f"unknown claim {claim!r}: use one of {', '.join(CLAIMS)}")
    if not tests:
        raise TradeoffsError(f"{claim}: no tests given; a verdict needs at least one statistic with a CI")
    rows = pd.DataFrame([{**asdict(t), "verdict": t.verdict} for t in tests])
    ds = xr.Dataset({c: ("test", rows[c].to_numpy()) for c in rows.columns if c != "name"},
                    coords={"test": rows["name"].to_numpy()})
    ds.attrs.update(claim=claim, claim_text=CLAIMS[claim])
    return ds


def record(claim: str, tests: Sequence[Test], *, profile: str, parameters: dict[str, Any]) -> xr.Dataset:
    """Store the verdict rows as `<claim>_verdict_<profile>.nc` and return them.

    A stored file with the same rows is kept as it is (with its provenance), so rerunning an unchanged notebook
    leaves the results folder untouched.
    """
    ds, name = to_dataset(claim, tests), f"{claim}_verdict_{profile}"
    try:
        stored = results.load(name)
    except TradeoffsError:
        stored = None
    if stored is None or not stored.equals(ds):
        results.save(ds, name, profile=profile, parameters=parameters, elapsed_s=0.0,
                     tolerance={"rtol": 1e-3, "atol": 1e-3})
    return results.load(name)


def overall(verdicts: Sequence[str]) -> str:
    """A claim's overall verdict: unanimous rows decide; mixed rows are 'mixed'."""
    unique = set(verdicts)
    return unique.pop() if len(unique) == 1 else "mixed: " + ", ".join(sorted(unique))


def table(profile: str = "default") -> pd.DataFrame:
    """One row per claim from the stored verdict files; claims not yet run say so."""
    rows = []
    for claim, text in CLAIMS.items():
        try:
            ds = results.load(f"{claim}_verdict_{profile}")
        except TradeoffsError:
            rows.append({"claim": claim, "claim_text": text, "result": "not yet run", "verdict": "not yet run"})
            continue
        lines = [f"{t}: {ds.statistic.sel(test=t).item()} = {float(ds.estimate.sel(test=t)):.2f} "
                 f"[{float(ds.ci_low.sel(test=t)):.2f}, {float(ds.ci_high.sel(test=t)):.2f}] → {ds.verdict.sel(test=t).item()}"
                 for t in ds.test.values]
        rows.append({"claim": claim, "claim_text": text, "result": "; ".join(lines),
                     "paper": "; ".join(dict.fromkeys(np.asarray(ds.paper.values, dtype=str))),
                     "setting": "; ".join(dict.fromkeys(np.asarray(ds.setting.values, dtype=str))),
                     "verdict": overall(list(np.asarray(ds.verdict.values, dtype=str)))})
    return pd.DataFrame(rows)
