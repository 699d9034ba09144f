"""Statistics every claim page shares: correlations with 95% CIs, bootstrap intervals, permutation p values.

Intervals are chosen for the statistic: Fisher z for Pearson r, the Bonett–Wright standard error for Spearman ρ,
the Fieller standard error for Kendall τ, a t-interval for a mean over independent runs, and a BCa bootstrap over
independent units (models, architectures, training runs: a cluster bootstrap when cells share a unit) with
Hesterberg's small-sample expansion. An interval that collapses (|r| = 1, constant runs, n ≤ 3) is
NaN, never a point. Up to 10 points the p value of a correlation is exact (every permutation).

The verdict rule (`verdict`) is the same on every page: a claim about the sign of an effect is
*supported* when the 95% CI of the effect excludes 0 on the expected side, *not supported* when it excludes 0 on
the opposite side, and *inconclusive here* when it contains 0 (or is undefined). Validity gates come first
(`tradeoffs.verdicts`).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import pingouin as pg
import statsmodels.api as sm
from scipy import stats as sps
from scipy.stats import rankdata
from statsmodels.stats.multitest import multipletests

from .errors import TradeoffsError

Method = Literal["pearson", "spearman", "kendall"]
METHODS = ("pearson", "spearman", "kendall")
Verdict = Literal["supported", "not supported", "inconclusive here"]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise TradeoffsError(f"unknown correlation method {method!r}; use one of {METHODS} "
                             f"(close: {difflib.get_close_matches(str(method), METHODS)}).")


def _paired(*arrays, min_n: int = 3) -> list[np.ndarray]:
    """1-D float arrays of one common length >= min_n, all finite."""
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    if any(a.ndim != 1 for a in out) or len({len(a) for a in out}) != 1:
        raise TradeoffsError(f"expected 1-D arrays of one length, got shapes {[a.shape for a in out]}.")
    if len(out[0]) < min_n:
        raise TradeoffsError(f"only {len(out[0])} points; at least {min_n} are needed.")
    if not all(np.isfinite(a).all() for a in out):
        raise TradeoffsError("inputs contain NaN or inf; drop those points first.")
    return out


def _rowwise_kendall(x: np.ndarray, y: np.ndarray, max_cells: int = 2 ** 24) -> np.ndarray:
    """Kendall tau-b of each row pair: Σ sx·sy / sqrt(Σ sx² · Σ sy²) over pairs i<j, s = sign(difference)."""
    n = x.shape[1]
    i, j = np.triu_indices(n, k=1)
    out = np.empty(len(x))
    step = max(1, max_cells // max(len(i), 1))
    for start in range(0, len(x), step):
        sx = np.sign(x[start:start + step, i] - x[start:start + step, j])
        sy = np.sign(y[start:start + step, i] - y[start:start + step, j])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:start + step] = (sx * sy).sum(1) / np.sqrt((sx ** 2).sum(1) * (sy ** 2).sum(1))
    return out


def _rowwise_corr(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation of each row pair of two [B, n] arrays; NaN where a row is constant."""
    if method == "kendall":
        return _rowwise_kendall(x, y)
    if method == "spearman":
        x, y = rankdata(x, axis=1), rankdata(y, axis=1)
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (xc * yc).sum(1) / np.sqrt((xc ** 2).sum(1) * (yc ** 2).sum(1))
    return np.where(constant, np.nan, np.clip(r, -1, 1))


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 100:
        raise TradeoffsError(f"n_boot={n_boot} is too small for a percentile CI; use at least 1000.")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 50 * (1 - confidence)
    lo, hi = np.nanpercentile(values, [tail, 100 - tail]) if np.isfinite(values).any() else (np.nan, np.nan)
    return float(lo), float(hi)


EXACT_MAX_N = 10  # up to this many points a correlation's p value enumerates every permutation


def correlation_se(r: float, n: int, method: Method = "pearson") -> float:
    """Standard error of atanh(r): Fisher 1/√(n−3) (Pearson), Bonett–Wright √((1+r²/2)/(n−3)) (Spearman),
    Fieller √(0.437/(n−4)) (Kendall). NaN where undefined."""
    _check_method(method)
    k = {"pearson": 3, "spearman": 3, "kendall": 4}[method]
    if n <= k or not np.isfinite(r):
        return math.nan
    num = {"pearson": 1.0, "spearman": 1 + r * r / 2, "kendall": 0.437}[method]
    return math.sqrt(num / (n - k))


def correlation_ci(r: float, n: int, method: Method = "pearson", confidence: float = 0.95) -> tuple[float, float]:
    """95% CI of a correlation on the atanh scale with `correlation_se`; NaN when |r| = 1 or n is too small."""
    se = correlation_se(r, n, method)
    if not np.isfinite(se) or abs(r) >= 1:
        return math.nan, math.nan
    half = float(sps.norm.ppf(0.5 + confidence / 2)) * se
    return float(np.tanh(np.arctanh(r) - half)), float(np.tanh(np.arctanh(r) + half))


def exact_permutation_p(x, y, method: Method = "spearman") -> float:
    """Two-sided p of a correlation over all n! orderings of y (n ≤ EXACT_MAX_N): P(|r_perm| ≥ |r_obs|)."""
    _check_method(method)
    x, y = _paired(x, y)
    n = len(x)
    if n > EXACT_MAX_N:
        raise TradeoffsError(f"an exact permutation p enumerates n! orderings; n = {n} > {EXACT_MAX_N}: use the "
                             "asymptotic p or a sampled permutation test.")
    observed = abs(float(_rowwise_corr(x[None], y[None], method)[0]))
    if not np.isfinite(observed):
        return math.nan
    perms = _permutations(n)
    if method != "kendall":  # a correlation of (x, y[perm]) is a dot product of centred, scaled values
        u, v = (rankdata(x), rankdata(y)) if method == "spearman" else (x, y)
        u, v = (u - u.mean()) / np.linalg.norm(u - u.mean()), (v - v.mean()) / np.linalg.norm(v - v.mean())
        hits = sum(int((np.abs(v[perms[i:i + 500_000]] @ u) >= observed - 1e-12).sum())
                   for i in range(0, len(perms), 500_000))
        return hits / len(perms)
    r = _rowwise_corr(np.broadcast_to(x, perms.shape), y[perms], method)
    return float(np.mean(np.abs(r) >= observed - 1e-12))


@functools.lru_cache(maxsize=2)
def _permutations(n: int) -> np.ndarray:
    """All n! orderings of range(n), one per row (3.6 M rows at n = 10)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


def correlation(x, y, method: Method = "pearson", dropna: bool = False) -> dict:
    """r, 95% CI, two-sided p and n.

    The CI is `correlation_ci` (Fisher z, Bonett–Wright or Fieller, by method); the p value is pingouin's, or exact
    (`exact_permutation_p`) up to 10 points. |r| = 1 or a constant input give a NaN interval, never a point.
    With `dropna`, pairs with a NaN are dropped first and fewer than 3 pairs give NaN.
    """
    _check_method(method)
    if dropna:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if ok.sum() < 3:
            return {"r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": int(ok.sum()),
                    "ci_method": "undefined (fewer than 3 points)"}
    x, y = _paired(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": len(x),
                "ci_method": "undefined (a constant input)"}
    r = float(_rowwise_corr(x[None], y[None], method)[0])
    lo, hi = correlation_ci(r, len(x), method)
    if len(x) <= EXACT_MAX_N:
        p = exact_permutation_p(x, y, method)
    else:
        p = float(pg.corr(x, y, method=method).iloc[0]["p_val"])
    names = {"pearson": "Fisher z", "spearman": "Bonett–Wright z", "kendall": "Fieller z"}
    return {"r": r, "ci_low": lo, "ci_high": hi, "p": p, "n": len(x), "ci_method": names[method]}


def correlation_beyond(x, y, threshold: float, method: Method = "pearson") -> pd.DataFrame:
    """`correlation` of the points with x <= threshold (row "below") and x > threshold (row "above")."""
    x, y = _paired(x, y, min_n=1)
    rows = {side: correlation(x[mask], y[mask], method)
            for side, mask in (("below", x <= threshold), ("above", x > threshold))}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("side")


def _quadratic_coefficients(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) of y = a x² + b x + c for each row of [B, n] arrays; NaN if < 3 distinct x."""
    mu, sd = x.mean(), x.std()
    z = (x - mu) / sd  # standardised for conditioning, converted back below
    design = np.stack([z ** 2, z, np.ones_like(z)], axis=-1)
    a_z, b_z, c_z = (np.linalg.pinv(design) @ y[..., None])[..., 0].T
    coef = np.stack([a_z / sd ** 2, b_z / sd - 2 * a_z * mu / sd ** 2,
                     c_z - b_z * mu / sd + a_z * mu ** 2 / sd ** 2], axis=-1)
    distinct = (np.diff(np.sort(x, axis=-1), axis=-1) != 0).sum(-1) + 1
    return np.where((distinct >= 3)[..., None], coef, np.nan)


def quadratic_fit(x, y, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Fit y = a x² + b x + c (statsmodels OLS) and bootstrap the vertex -b/(2a) over (x, y) pairs.

    Returns a, b, c, vertex_x, vertex_ci (percentile), p_quadratic (two-sided p of the x² term), r2,
    concave (a < 0), concave_fraction (share of bootstrap fits with a < 0), vertex_in_range (vertex within
    [min x, max x]) and n. A nearly linear relation gives a small |a|, a far and wide vertex CI and a
    concave_fraction near ½.
    """
    x, y = _paired(x, y, min_n=4)
    if len(np.unique(x)) < 3:
        raise TradeoffsError("a quadratic needs at least 3 distinct x values.")
    ols = sm.OLS(y, np.column_stack([x ** 2, x, np.ones_like(x)])).fit()
    a, b, c = ols.params
    idx = _bootstrap_indices(len(x), n_boot, seed)
    coef = _quadratic_coefficients(x[idx], y[idx])
    with np.errstate(divide="ignore", invalid="ignore"):
        vertices = -coef[:, 1] / (2 * coef[:, 0])
    vertex = -b / (2 * a)
    valid = np.isfinite(coef[:, 0])
    return {"a": float(a), "b": float(b), "c": float(c), "vertex_x": float(vertex),
            "vertex_ci": _percentile_ci(vertices, confidence), "p_quadratic": float(ols.pvalues[0]),
            "r2": float(ols.rsquared), "concave": bool(a < 0),
            "concave_fraction": float((coef[valid, 0] < 0).mean()),
            "vertex_in_range": bool(x.min() <= vertex <= x.max()), "n": len(x)}


# ---------------------------------------------------------------- bootstrap intervals over independent units

def _bca(estimate: float, boot: np.ndarray, jack: np.ndarray, n: int, confidence: float) -> tuple[float, float]:
    """BCa interval from bootstrap and jackknife replicates, with Hesterberg's small-sample expansion.

    The expansion replaces the normal quantile z_{α/2} by √(n/(n−1))·t_{α/2, n−1} (Hesterberg 2015, "expanded
    percentile"), which brings small-sample coverage close to nominal; it vanishes as n grows.
    """
    boot, jack = boot[np.isfinite(boot)], jack[np.isfinite(jack)]
    if len(boot) < 100 or len(jack) < 3 or np.ptp(boot) == 0 or not np.isfinite(estimate):
        return math.nan, math.nan
    alpha = 1 - confidence
    z_half = math.sqrt(n / (n - 1)) * float(sps.t.ppf(1 - alpha / 2, n - 1))
    share = (np.sum(boot < estimate) + 0.5 * np.sum(boot == estimate)) / len(boot)
    z0 = float(sps.norm.ppf(np.clip(share, 1 / len(boot), 1 - 1 / len(boot))))
    d = jack.mean() - jack
    denom = 6 * (d ** 2).sum() ** 1.5
    acc = float((d ** 3).sum() / denom) if denom > 0 else 0.0
    qs = [float(np.clip(sps.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z))), 0, 1)) for z in (-z_half, z_half)]
    lo, hi = np.quantile(boot, qs)
    return float(lo), float(hi)


def bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n_units: int, *, n_boot: int = 4000, seed: int = 0,
              confidence: float = 0.95) -> dict:
    """BCa bootstrap over `n_units` independent units (models, architectures, training runs, clusters).

    `statistic` maps an integer array [B, m] of unit indices (each row one resample, with repeats) to B values; it
    is called on the identity (the estimate), on `n_boot` resamples and on the n leave-one-out rows (jackknife, for
    the acceleration). Returns estimate, ci_low, ci_high, n (units), n_boot (finite resamples) and ci_method.
    """
    if n_units < 3:
        raise TradeoffsError(f"a bootstrap over {n_units} units cannot give an interval; at least 3 are needed.")
    idx = _bootstrap_indices(n_units, n_boot, seed)
    estimate = float(np.asarray(statistic(np.arange(n_units)[None]))[0])
    boot = np.asarray(statistic(idx), dtype=float)
    jack_idx = np.array([np.delete(np.arange(n_units), i) for i in range(n_units)])
    jack = np.asarray(statistic(jack_idx), dtype=float)
    lo, hi = _bca(estimate, boot, jack, n_units, confidence)
    return {"estimate": estimate, "ci_low": lo, "ci_high": hi, "n": n_units, "n_boot": int(np.isfinite(boot).sum()),
            "ci_method": "BCa bootstrap (expanded)"}


def cluster_mean(values, clusters, *, n_boot: int = 4000, seed: int = 0) -> dict:
    """Mean of cells that share clusters (e.g. table cells of the same model), BCa bootstrap over whole clusters."""
    values = np.asarray(values, dtype=float)
    labels = np.asarray(clusters)
    if values.shape != labels.shape or not np.isfinite(values).all():
        raise TradeoffsError("values and clusters must be finite 1-D arrays of one length.")
    groups = [values[labels == c] for c in dict.fromkeys(labels.tolist())]
    sums, counts = np.array([g.sum() for g in groups]), np.array([len(g) for g in groups])
    out = bootstrap(lambda idx: sums[idx].sum(1) / counts[idx].sum(1), len(groups), n_boot=n_boot, seed=seed)
    return {**out, "ci_method": out["ci_method"] + f" over {len(groups)} clusters", "n_cells": len(values)}


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean over independent runs with a t-interval and the one-sample t-test p; constant runs or n < 2 give NaN."""
    v = np.asarray(values, dtype=float)
    n, mean = len(v), float(v.mean()) if len(v) else math.nan
    if n < 2 or np.ptp(v) == 0:
        why = "fewer than 2 runs" if n < 2 else "every run gives the same value"
        return {"estimate": mean, "ci_low": math.nan, "ci_high": math.nan, "n": n, "p": math.nan,
                "ci_method": f"t-interval (undefined: {why})"}
    lo, hi = sps.t.interval(confidence, n - 1, loc=mean, scale=sps.sem(v))
    return {"estimate": mean, "ci_low": float(lo), "ci_high": float(hi), "n": n,
            "p": float(sps.ttest_1samp(v, 0).pvalue), "ci_method": "t-interval over runs"}


def paired_difference(a, b, *, n_boot: int = 4000, n_perm: int = 4000, seed: int = 0) -> dict:
    """Mean of a − b over paired units: BCa bootstrap CI and a sign-flip permutation p (two-sided)."""
    a, b = _paired(a, b)
    diff = a - b
    out = bootstrap(lambda idx: diff[idx].mean(1), len(diff), n_boot=n_boot, seed=seed)
    signs = np.random.default_rng(seed + 1).choice([-1.0, 1.0], size=(n_perm, len(diff)))
    null = (signs * diff).mean(1)
    p = (1 + int((np.abs(null) >= abs(diff.mean()) - 1e-12).sum())) / (1 + n_perm)
    return {**out, "p": float(p)}


def corr_diff(targets, x1, x2, method: Method = "spearman", n_boot: int = 4000, seed: int = 0) -> dict:
    """Mean over target columns of r(target, x1) − r(target, x2), BCa bootstrap over the units (rows).

    `targets` is [n] or [n, m] (m targets measured on the same n units as `x1` and `x2`); units are resampled
    jointly, so the CI respects the pairing. Resamples where a correlation is undefined are dropped.
    """
    _check_method(method)
    t = np.asarray(targets, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    x1, x2, *cols = _paired(x1, x2, *t.T)

    def stat(idx: np.ndarray) -> np.ndarray:
        return np.mean([_rowwise_corr(c[idx], x1[idx], method) - _rowwise_corr(c[idx], x2[idx], method)
                        for c in cols], axis=0)

    return bootstrap(stat, len(x1), n_boot=n_boot, seed=seed)


def mean_correlation(x, ys, method: Method = "pearson", n_boot: int = 4000, seed: int = 0) -> dict:
    """Mean over the columns of `ys` [n, m] of r(x, column), BCa bootstrap over the n units (rows)."""
    _check_method(method)
    ys = np.asarray(ys, dtype=float)
    x, *cols = _paired(x, *ys.T)
    return bootstrap(lambda idx: np.mean([_rowwise_corr(x[idx], c[idx], method) for c in cols], axis=0),
                     len(x), n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------- several tests, heterogeneity, design checks

def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p values; NaN entries stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def heterogeneity(rs: Sequence[float], ns: Sequence[int], method: Method = "spearman") -> dict:
    """Cochran's Q and I² of several correlations on the atanh scale (inverse-variance weights from
    `correlation_se`), with the pooled r. Assumes the correlations are independent estimates."""
    r, n = np.asarray(rs, dtype=float), np.asarray(ns, dtype=int)
    se = np.array([correlation_se(ri, ni, method) for ri, ni in zip(r, n)])
    ok = np.isfinite(r) & np.isfinite(se) & (np.abs(r) < 1)
    if ok.sum() < 2:
        return {"Q": math.nan, "I2": math.nan, "p": math.nan, "pooled_r": math.nan, "k": int(ok.sum())}
    z, w = np.arctanh(r[ok]), 1 / se[ok] ** 2
    pooled = float((w * z).sum() / w.sum())
    q = float((w * (z - pooled) ** 2).sum())
    df = int(ok.sum()) - 1
    return {"Q": q, "I2": max(0.0, (q - df) / q) if q > 0 else 0.0, "p": float(sps.chi2.sf(q, df)),
            "pooled_r": float(np.tanh(pooled)), "k": int(ok.sum())}


def n_to_detect(effect: float, method: Method = "spearman", confidence: float = 0.95) -> int:
    """The smallest n at which a correlation equal to `effect` has a CI that excludes 0."""
    if not 0 < abs(effect) < 1:
        raise TradeoffsError(f"effect must lie strictly between -1 and 1 and not be 0, got {effect}.")
    n = 4
    while not correlation_ci(abs(effect), n, method, confidence)[0] > 0:
        n += 1
    return n


def late_change(curves, last: int = 5) -> float:
    """Largest change of any curve over its `last` values, read off a straight-line fit (slope × (last − 1)), so
    that checkpoint-to-checkpoint noise does not count as change: [runs, epochs] → one number (NaN if too short)."""
    c = np.asarray(curves, dtype=float)
    if c.ndim != 2 or c.shape[1] < last:
        return math.nan
    slopes = np.polyfit(np.arange(last, dtype=float), c[:, -last:].T, 1)[0]
    return float(np.abs(slopes).max() * (last - 1))


def held_out_gain(measure, accuracy, *, no_later: bool = False) -> np.ndarray:
    """Per run: the measure at its best epoch minus at the best-accuracy epoch, with both epochs chosen on one half
    of the images and the measure read on the other half; the mean of the two folds.

    `measure` (higher = better) and `accuracy` are [runs, epochs, 2] (the two halves of the images). A real early
    peak gives a positive gain; a flat, noisy measure gives none. `no_later` chooses the measure's best epoch among
    those up to the best-accuracy epoch only: a positive gain then says that an *earlier* checkpoint is better on
    other images, and a measure that keeps improving after accuracy peaks gives none.
    """
    m, a = np.asarray(measure, dtype=float), np.asarray(accuracy, dtype=float)
    if m.shape != a.shape or m.ndim != 3 or m.shape[2] != 2:
        raise TradeoffsError(f"measure and accuracy must both be [runs, epochs, 2], got {m.shape} and {a.shape}.")
    runs, epochs = np.arange(len(m)), np.arange(m.shape[1])
    folds = []
    for choose, judge in ((0, 1), (1, 0)):
        best_accuracy = a[:, :, choose].argmax(1)
        candidates = m[:, :, choose]
        if no_later:
            candidates = np.where(epochs[None] <= best_accuracy[:, None], candidates, -np.inf)
        folds.append(m[runs, candidates.argmax(1), judge] - m[runs, best_accuracy, judge])
    return (folds[0] + folds[1]) / 2


def epoch_lead(measure, accuracy) -> np.ndarray:
    """Per run: how many epochs the best epoch of the measure comes before the best-accuracy epoch, both chosen on
    the same half of the images, averaged over the two halves (so the images' sampling noise is in each run's value).

    `measure` (higher = better) and `accuracy` are [runs, epochs, 2]; epochs are consecutive. Positive: the measure
    peaks first; 0: the same epoch; ties go to the earliest epoch, as `argmax` does.
    """
    m, a = np.asarray(measure, dtype=float), np.asarray(accuracy, dtype=float)
    if m.shape != a.shape or m.ndim != 3 or m.shape[2] != 2:
        raise TradeoffsError(f"measure and accuracy must both be [runs, epochs, 2], got {m.shape} and {a.shape}.")
    return (a.argmax(1) - m.argmax(1)).mean(1).astype(float)


def largest_gap(x) -> float:
    """The widest stretch of x without a data point."""
    x = np.unique(np.asarray(x, dtype=float))
    return float(np.diff(x).max()) if len(x) > 1 else math.nan


def noise_ratio(accuracy, n_test: int, replicate_pairs=None) -> dict:
    """How far a set of accuracies (fractions, one per model or architecture) spreads beyond measurement noise.

    across: SD over units; sampling: the binomial SD of one accuracy measured on `n_test` images,
    √(mean a(1−a) / n_test); seed: SD of one run from retraining, from `replicate_pairs` [m, 2] (two seeds of the
    same unit) as SD(difference)/√2 (0 when not given); ratio: across / √(seed² + sampling²); reliability:
    1 − 1/ratio², the share of the across-unit variance that is not noise (negative when noise dominates).
    """
    a = np.asarray(accuracy, dtype=float)
    sampling = math.sqrt(float(np.mean(a * (1 - a))) / n_test)
    seed = 0.0
    if replicate_pairs is not None:
        pairs = np.asarray(replicate_pairs, dtype=float)
        seed = float(np.std(pairs[:, 1] - pairs[:, 0], ddof=1) / math.sqrt(2)) if len(pairs) >= 2 else math.nan
    across = float(np.std(a, ddof=1))
    ratio = across / math.hypot(seed, sampling) if math.hypot(seed, sampling) > 0 else math.inf
    reliability = 1 - 1 / ratio ** 2 if ratio > 0 else -math.inf
    return {"across": across, "seed": seed, "sampling": sampling, "ratio": ratio, "reliability": reliability}


def attenuation_corrected(r: float, reliability_x: float, reliability_y: float) -> float:
    """Spearman's correction for attenuation, r / √(rel_x · rel_y), clipped to [−1, 1] (a point estimate)."""
    if not (reliability_x > 0 and reliability_y > 0):
        return math.nan
    return float(np.clip(r / math.sqrt(reliability_x * reliability_y), -1, 1))


def _groups(units, n: int) -> list[np.ndarray]:
    units = np.arange(n) if units is None else np.asarray(units)
    if units.shape != (n,):
        raise TradeoffsError(f"units must have one entry per point ({n}), got shape {units.shape}.")
    return [np.flatnonzero(units == u) for u in dict.fromkeys(units.tolist())]


def slope_at_top(x, y, units=None, *, n_boot: int = 4000, seed: int = 0) -> dict:
    """Slope 2a·max(x) + b of the least-squares quadratic at the highest x (negative: falling at the top),
    BCa bootstrap over whole units (e.g. training runs whose checkpoints are not independent)."""
    x, y = _paired(x, y, min_n=4)
    groups = _groups(units, len(x))
    top = x.max()

    def stat(idx: np.ndarray) -> np.ndarray:
        out = np.full(len(idx), np.nan)
        for k, row in enumerate(idx):
            pts = np.concatenate([groups[i] for i in row])
            if len(np.unique(x[pts])) >= 3:
                a, b, _ = np.polyfit(x[pts], y[pts], 2)
                out[k] = 2 * a * top + b
        return out

    return bootstrap(stat, len(groups), n_boot=n_boot, seed=seed)


def _fitted_optimum(x: np.ndarray, y: np.ndarray) -> float:
    """Where a least-squares quadratic is highest within [min x, max x]."""
    a, b, c = np.polyfit(x, y, 2)
    candidates = [x.min(), x.max()]
    if a < 0 and x.min() < -b / (2 * a) < x.max():
        candidates.append(-b / (2 * a))
    return float(max(candidates, key=lambda t: np.polyval([a, b, c], t)))


def beyond_optimum_split(x, y, units=None, *, seed: int = 0) -> dict:
    """Spearman ρ beyond an optimum fitted on other data.

    The units are split in two halves at random (`seed`); the quadratic's optimum is fitted on the first half and ρ
    is computed over the second half's points beyond it, so the optimum is not chosen on the points it judges.
    Returns `correlation`'s keys, the optimum, the number of units, the points used for the fit and the number of
    units among the judged points (`units_beyond`). The interval treats points as independent: with several points
    per unit (checkpoints of one run) it is only as good as the number of units, which a gate should check.
    """
    x, y = _paired(x, y, min_n=6)
    groups = _groups(units, len(x))
    order = np.random.default_rng(seed).permutation(len(groups))
    fit_half = np.concatenate([groups[i] for i in order[: len(groups) // 2]])
    test_half = np.concatenate([groups[i] for i in order[len(groups) // 2:]])
    if len(np.unique(x[fit_half])) < 3:
        raise TradeoffsError("the fitting half has fewer than 3 distinct x values; more units are needed.")
    optimum = _fitted_optimum(x[fit_half], y[fit_half])
    beyond = test_half[x[test_half] > optimum]
    unit_of = np.empty(len(x), dtype=int)
    for k, g in enumerate(groups):
        unit_of[g] = k
    base = {"optimum": optimum, "n_fit": len(fit_half), "units": len(groups),
            "units_beyond": len(np.unique(unit_of[beyond]))}
    if len(beyond) < 3:
        return {**base, "r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": len(beyond),
                "ci_method": "undefined (fewer than 3 points beyond the optimum)"}
    return {**base, **correlation(x[beyond], y[beyond], "spearman")}


def verdict(ci_low: float, ci_high: float, expected_sign: int) -> Verdict:
    """The single verdict rule of the book, applied to the 95% CI of an effect whose sign a claim predicts.

    "supported" if the CI lies strictly on the expected side of 0, "not supported" if it lies strictly on the
    opposite side, "inconclusive here" if it contains 0 or is NaN. `expected_sign` is +1 or -1.
    """
    if expected_sign not in (1, -1):
        raise TradeoffsError(f"expected_sign must be +1 or -1, got {expected_sign!r}.")
    if np.isnan(ci_low) or np.isnan(ci_high):
        return "inconclusive here"
    if ci_low > ci_high:
        raise TradeoffsError(f"ci_low {ci_low} > ci_high {ci_high}; pass the interval in order.")
    lo, hi = (ci_low, ci_high) if expected_sign == 1 else (-ci_high, -ci_low)
    if lo > 0:
        return "supported"
    if hi < 0:
        return "not supported"
    return "inconclusive here"
