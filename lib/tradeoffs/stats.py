"""Statistics every claim page shares: correlations with 95% CIs, the quadratic vertex, permutation tests, verdicts.

The verdict rule (`verdict`) is the same on every page: a claim about the sign of an effect is
*supported* when the 95% CI of the effect excludes 0 on the expected side, *not supported* when it excludes 0 on
the opposite side, and *inconclusive here* when it contains 0 (or is undefined).
"""

from __future__ import annotations

import difflib
from typing import Literal

import numpy as np
import pandas as pd
import pingouin as pg
import statsmodels.api as sm
from scipy.stats import rankdata

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


def bootstrap_correlation(x, y, method: Method = "pearson", n_boot: int = 2000, seed: int = 0,
                          confidence: float = 0.95) -> dict:
    """Correlation with a percentile bootstrap CI over resampled (x, y) pairs (degenerate resamples skipped)."""
    _check_method(method)
    x, y = _paired(x, y)
    idx = _bootstrap_indices(len(x), n_boot, seed)
    boot = _rowwise_corr(x[idx], y[idx], method)
    lo, hi = _percentile_ci(boot, confidence)
    r = float(_rowwise_corr(x[None], y[None], method)[0])
    return {"r": r, "ci_low": lo, "ci_high": hi, "n": len(x), "n_boot": int(np.isfinite(boot).sum())}


def correlation(x, y, method: Method = "pearson", n_boot: int = 2000, seed: int = 0) -> dict:
    """r, 95% CI, two-sided p and n via `pingouin.corr`.

    Pearson/Spearman CIs are pingouin's Fisher-z intervals (unrounded). For Kendall, pingouin's interval uses the
    Pearson standard error 1/sqrt(n-3), which does not fit tau, so the CI is a percentile bootstrap (`n_boot`, `seed`).
    """
    _check_method(method)
    x, y = _paired(x, y)
    row = pg.corr(x, y, method=method).iloc[0]
    r = float(row["r"])
    if method == "kendall":
        boot = bootstrap_correlation(x, y, method, n_boot=n_boot, seed=seed)
        lo, hi, ci_method = boot["ci_low"], boot["ci_high"], "bootstrap percentile"
    else:  # pingouin's own CI95 column is rounded to 2 decimals; recompute the same interval unrounded
        lo, hi = (np.nan, np.nan) if np.isnan(r) else (r, r) if abs(r) == 1 else \
            pg.compute_esci(stat=r, nx=len(x), ny=len(x), eftype="r", decimals=15)
        ci_method = "Fisher z"
    return {"r": r, "ci_low": float(lo), "ci_high": float(hi), "p": float(row["p_val"]),
            "n": len(x), "ci_method": ci_method}


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


def _permutation_p(observed: float, null: np.ndarray) -> float:
    """Two-sided permutation p = (1 + #{|null| >= |observed|}) / (1 + #null); NaN permutations are dropped."""
    null = null[np.isfinite(null)]
    return float((1 + (np.abs(null) >= abs(observed) - 1e-12).sum()) / (1 + len(null)))


def bootstrap_corr_diff(targets, x1, x2, method: Method = "spearman", n_boot: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> dict:
    """Mean over target columns of r(target, x1) - r(target, x2), with a percentile CI over resampled units.

    `targets` is [n] or [n, m] (m targets measured on the same n units as `x1` and `x2`); units are resampled
    jointly, so the CI respects the pairing. Resamples where a correlation is undefined are skipped.
    """
    _check_method(method)
    t = np.asarray(targets, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    x1, x2, *cols = _paired(x1, x2, *t.T)
    idx = np.vstack([np.arange(len(x1))[None], _bootstrap_indices(len(x1), n_boot, seed)])
    diffs = np.mean([_rowwise_corr(c[idx], x1[idx], method) - _rowwise_corr(c[idx], x2[idx], method) for c in cols],
                    axis=0)
    lo, hi = _percentile_ci(diffs[1:], confidence)
    return {"diff": float(diffs[0]), "ci_low": lo, "ci_high": hi, "n": len(x1), "n_boot": int(np.isfinite(diffs[1:]).sum())}


def permutation_test_corr_diff(x1, y1, x2, y2, n_perm: int = 5000, seed: int = 0,
                               method: Method = "pearson") -> dict:
    """r(x1, y1) - r(x2, y2) for two independent samples; null: group labels permuted over the pooled pairs."""
    _check_method(method)
    x1, y1 = _paired(x1, y1)
    x2, y2 = _paired(x2, y2)
    n1 = len(x1)
    x, y = np.concatenate([x1, x2]), np.concatenate([y1, y2])
    perm = np.random.default_rng(seed).permuted(np.tile(np.arange(len(x)), (n_perm, 1)), axis=1)
    g1, g2 = perm[:, :n1], perm[:, n1:]
    null = _rowwise_corr(x[g1], y[g1], method) - _rowwise_corr(x[g2], y[g2], method)
    r1, r2 = (float(_rowwise_corr(a[None], b[None], method)[0]) for a, b in ((x1, y1), (x2, y2)))
    return {"diff": r1 - r2, "r1": r1, "r2": r2, "p": _permutation_p(r1 - r2, null), "n_perm": n_perm}


def permutation_test_corr_diff_paired(x, y1, y2, n_perm: int = 5000, seed: int = 0,
                                      method: Method = "pearson") -> dict:
    """r(x, y1) - r(x, y2) on the same points; null: y1 and y2 swapped per point at random.

    To make the two y exchangeable, they are first put on one scale: z-scores (Pearson) or ranks (Spearman,
    Kendall); neither changes the observed correlations.
    """
    _check_method(method)
    x, y1, y2 = _paired(x, y1, y2)
    if method == "pearson":
        u1, u2 = ((v - v.mean()) / v.std() if v.std() > 0 else v for v in (y1, y2))
    else:
        u1, u2 = rankdata(y1), rankdata(y2)
    swap = np.random.default_rng(seed).random((n_perm, len(x))) < 0.5
    xs = np.broadcast_to(x, swap.shape)
    null = (_rowwise_corr(xs, np.where(swap, u2, u1), method) - _rowwise_corr(xs, np.where(swap, u1, u2), method))
    r1, r2 = (float(_rowwise_corr(x[None], v[None], method)[0]) for v in (y1, y2))
    return {"diff": r1 - r2, "r1": r1, "r2": r2, "p": _permutation_p(r1 - r2, null), "n_perm": n_perm}


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
