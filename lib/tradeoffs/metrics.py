"""Scores of models against people: accuracy, 2AFC, shape bias, error consistency, human labels, saliency maps.

Trial tables follow the one human/model schema (columns ``dataset, observer, condition, image, category, texture,
response, rt, trial``); a trial is correct when ``response == category`` (so ``"na"`` counts as an error).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr
from scipy.optimize import minimize_scalar
from scipy.special import entr, logsumexp, xlogy
from scipy.stats import rankdata, spearmanr

from .errors import TradeoffsError

TRIAL_KEYS = ["dataset", "condition", "image"]  # a trial of one observer is identified by these
CLICKME_CEILING = 0.65753  # Harmonization HUMAN_SPEARMAN_CEILING (human inter-rater Spearman on ClickMe)
BLUR_SIZE, BLUR_SIGMA, BLUR_GRID = 10, 10.0, 64  # Harmonization's ClickMe heatmap blur


def _finite(x, name: str, ndim: int) -> np.ndarray:
    a = np.ascontiguousarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim != ndim or a.size == 0:
        raise TradeoffsError(f"{name} has shape {a.shape}; expected a non-empty {ndim}-D array.")
    if not np.isfinite(a).all():
        raise TradeoffsError(f"{name} contains NaN or inf; remove or fix those rows first.")
    return a


def _distributions(p, name: str, atol: float = 1e-3) -> np.ndarray:
    """[N, K] rows of probabilities: non-negative, each summing to 1 within `atol`."""
    a = _finite(p, name, 2)
    if (a < 0).any() or not np.allclose(a.sum(1), 1.0, atol=atol):
        raise TradeoffsError(f"{name} rows must be probabilities summing to 1 (got sums "
                             f"{a.sum(1).min():.4g}..{a.sum(1).max():.4g}); apply softmax to logits first.")
    return a


def _require(trials: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise TradeoffsError(f"{what} needs trial columns {missing}; build trials in the schema of tradeoffs.data.")
    if trials.empty:
        raise TradeoffsError(f"{what} got an empty trial table; check the dataset/observer filter.")


# ---------------------------------------------------------------- accuracy, 2AFC, 16-class decisions

def two_afc(d0, d1, p_human) -> tuple[np.ndarray, float]:
    """BAPPS 2AFC score per triplet, (d0<d1)(1-p) + (d1<d0)p + ½(d0==d1), p = share of humans preferring p1."""
    d0, d1, p = _finite(d0, "d0", 1), _finite(d1, "d1", 1), _finite(p_human, "p_human", 1)
    if not d0.shape == d1.shape == p.shape:
        raise TradeoffsError(f"d0, d1, p_human have lengths {len(d0)}, {len(d1)}, {len(p)}; "
                             "pass one value per triplet.")
    if ((p < 0) | (p > 1)).any():
        raise TradeoffsError("p_human must be fractions in [0, 1] (the share of judges who chose p1).")
    score = (d0 < d1) * (1 - p) + (d1 < d0) * p + 0.5 * (d0 == d1)
    return score, float(score.mean())


def accuracy(logits, labels, k: int | Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy for each k: the share of rows whose label is among the k largest scores."""
    ks = (k,) if isinstance(k, int) else tuple(k)
    scores = torch.as_tensor(_finite(logits, "logits", 2))
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)).long()
    n, c = scores.shape
    if y.shape != (n,):
        raise TradeoffsError(f"labels have shape {tuple(y.shape)}; expected ({n},), one label per row of logits.")
    if ((y < 0) | (y >= c)).any():
        raise TradeoffsError(f"labels must lie in 0..{c - 1} (the {c} columns of logits).")
    if not ks or min(ks) < 1 or max(ks) > c:
        raise TradeoffsError(f"k={ks} is invalid for {c} classes; use values in 1..{c}.")
    hits = scores.topk(max(ks), dim=1).indices == y[:, None]
    return {kk: float(hits[:, :kk].any(1).double().mean()) for kk in ks}


def imagenet_to_16(probs_1000, indices: Mapping[str, Sequence[int]]) -> tuple[np.ndarray, list[str]]:
    """16-class probabilities [N, 16]: the mean of each class's ImageNet-1k probabilities (model-vs-human rule).

    Categories come back sorted alphabetically (model-vs-human order); the decision is the argmax over columns.
    """
    p = _distributions(probs_1000, "probs_1000")
    if p.shape[1] != 1000:
        raise TradeoffsError(f"probs_1000 has {p.shape[1]} classes; expected 1000 (drop the background class of "
                             "1001-way models first).")
    categories = sorted(indices)
    if not categories:
        raise TradeoffsError("indices is empty; load helper/16class_imagenet_indices.json from model-vs-human.")
    for cat in categories:
        idx = list(indices[cat])
        if not idx or any(not 0 <= int(i) < 1000 for i in idx):
            raise TradeoffsError(f"indices[{cat!r}] must be a non-empty list of ImageNet indices in 0..999.")
    probs16 = np.stack([p[:, list(indices[c])].mean(1) for c in categories], axis=1)
    return probs16, categories


# ---------------------------------------------------------------- shape bias and accuracy of observers

def _conflict_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Cue-conflict trials whose shape and texture classes differ, with boolean columns shape_hit, texture_hit."""
    _require(trials, ["dataset", "observer", "category", "texture", "response"], "shape_bias")
    cc = trials[trials["dataset"] == "cue-conflict"]
    if cc.empty:
        raise TradeoffsError("no trials with dataset == 'cue-conflict'; shape bias is defined on cue-conflict only.")
    if (cc["texture"].fillna("") == "").any():
        raise TradeoffsError("cue-conflict trials with an empty texture; fill `texture` from the image id.")
    cc = cc[cc["category"] != cc["texture"]]
    return cc.assign(shape_hit=cc["response"] == cc["category"], texture_hit=cc["response"] == cc["texture"])


def shape_bias(trials: pd.DataFrame) -> float:
    """Shape hits / (shape hits + texture hits) over cue-conflict trials with shape != texture (pooled)."""
    cc = _conflict_trials(trials)
    shape, texture = int(cc["shape_hit"].sum()), int(cc["texture_hit"].sum())
    return shape / (shape + texture) if shape + texture else float("nan")


def shape_bias_by_observer(trials: pd.DataFrame) -> pd.Series:
    """Shape bias of each observer (index `observer`); NaN for an observer with no shape or texture hit."""
    hits = _conflict_trials(trials).groupby("observer")[["shape_hit", "texture_hit"]].sum()
    total = hits["shape_hit"] + hits["texture_hit"]
    return (hits["shape_hit"] / total.where(total > 0)).rename("shape_bias")


def observer_accuracy(trials: pd.DataFrame, by: Sequence[str] = ()) -> pd.Series:
    """Share of correct trials per observer (and per each column in `by`, e.g. ("dataset", "condition"))."""
    _require(trials, ["observer", "category", "response", *by], "observer_accuracy")
    correct = (trials["response"] == trials["category"]).rename("accuracy")
    return correct.groupby([trials["observer"], *(trials[c] for c in by)]).mean()


# ---------------------------------------------------------------- error consistency (Geirhos et al. 2020)

def _kappa(c_obs, c_exp):
    """Cohen's kappa (c_obs - c_exp) / (1 - c_exp); 1 where c_obs == 1 (model-vs-human rule, covers c_exp == 1)."""
    c_obs, c_exp = np.asarray(c_obs, dtype=float), np.asarray(c_exp, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c_obs == 1.0, 1.0, (c_obs - c_exp) / (1.0 - c_exp))


def _correct_by_trial(trials: pd.DataFrame, what: str) -> pd.Series:
    _require(trials, [*TRIAL_KEYS, "category", "response"], what)
    keys = [*TRIAL_KEYS, "observer"] if "observer" in trials.columns else TRIAL_KEYS
    dup = trials.duplicated(keys)
    if dup.any():
        row = trials.loc[dup, keys].iloc[0].to_dict()
        raise TradeoffsError(f"{what}: {int(dup.sum())} repeated trials, e.g. {row}; keep one trial per image.")
    return (trials["response"] == trials["category"]).set_axis(pd.MultiIndex.from_frame(trials[keys]))


def error_consistency(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """Error consistency (kappa) of two observers over the trials they share on (dataset, condition, image).

    c_obs = share of shared trials where both are right or both wrong; c_exp = p_a p_b + (1-p_a)(1-p_b) from the
    two accuracies on those trials; kappa = (c_obs - c_exp)/(1 - c_exp), and kappa = 1 when c_obs == 1.
    """
    for t in (a, b):
        if "observer" in t.columns and t["observer"].nunique() > 1:
            raise TradeoffsError("error_consistency compares two observers; pass the trials of one observer each "
                                 "(or use error_consistency_matrix).")
    ca, cb = (_correct_by_trial(t.drop(columns="observer", errors="ignore"), "error_consistency") for t in (a, b))
    both = pd.concat([ca.rename("a"), cb.rename("b")], axis=1, join="inner")
    if both.empty:
        raise TradeoffsError("the two observers share no (dataset, condition, image) trial; check the image ids.")
    pa, pb = both["a"].mean(), both["b"].mean()
    c_obs = float((both["a"] == both["b"]).mean())
    c_exp = float(pa * pb + (1 - pa) * (1 - pb))
    return {"kappa": float(_kappa(c_obs, c_exp)), "c_obs": c_obs, "c_exp": c_exp, "n": len(both)}


def _pairwise_kappa(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kappa [O, O] and shared-trial counts [O, O] from a [T, O] matrix of 1/0 (NaN = trial not seen)."""
    seen = (~np.isnan(correct)).astype(float)
    right = np.nan_to_num(correct)
    wrong = (1 - right) * seen
    n = seen.T @ seen
    with np.errstate(divide="ignore", invalid="ignore"):
        c_obs = (right.T @ right + wrong.T @ wrong) / n
        p_a = (right.T @ seen) / n  # accuracy of the row observer on the trials shared with the column observer
        p_b = p_a.T
        kappa = _kappa(c_obs, p_a * p_b + (1 - p_a) * (1 - p_b))
    return np.where(n > 0, kappa, np.nan), n


def error_consistency_matrix(trials: pd.DataFrame, observers: Sequence[str] | None = None,
                             by: Sequence[str] = ("dataset",)) -> xr.DataArray:
    """Kappa for every pair of observers, per group of `by`: dims (observer, observer2, *by).

    Each pair uses the trials both observers have; coordinate ``n_trials`` counts them (0 → kappa NaN).
    model-vs-human reports kappa per condition and then averages: use ``by=("dataset", "condition")`` for that.
    """
    by = list(by)
    if not set(by) <= {"dataset", "condition"}:
        raise TradeoffsError(f"by={by} is invalid; trials are matched on (dataset, condition, image), so group by "
                             "a subset of ('dataset', 'condition').")
    _require(trials, [*TRIAL_KEYS, "observer", "category", "response"], "error_consistency_matrix")
    known = sorted(trials["observer"].unique())
    observers = known if observers is None else list(observers)
    for o in observers:
        if o not in known:
            raise TradeoffsError(f"observer {o!r} is not in the trials; close names: "
                                 f"{difflib.get_close_matches(o, known, n=5, cutoff=0.4)}.")
    t = trials[trials["observer"].isin(observers)]
    correct = _correct_by_trial(t, "error_consistency_matrix").astype(float).unstack("observer")
    correct = correct.reindex(columns=observers)
    groups = correct.groupby(level=by, sort=True) if by else [((), correct)]
    rows = []
    for key, block in groups:
        kappa, n = _pairwise_kappa(block.to_numpy())
        frame = pd.DataFrame({"kappa": kappa.ravel(), "n_trials": n.ravel().astype(int)},
                             index=pd.MultiIndex.from_product([observers, observers], names=["observer", "observer2"]))
        for name, value in zip(by, key if isinstance(key, tuple) else (key,)):
            frame[name] = value
        rows.append(frame.set_index(by, append=True) if by else frame)
    ds = pd.concat(rows).to_xarray().reindex(observer=observers, observer2=observers)
    return ds["kappa"].assign_coords(n_trials=ds["n_trials"].fillna(0).astype(int))


# ---------------------------------------------------------------- agreement with human label distributions

def _kl_at(log_p: np.ndarray, h: np.ndarray, temperature: float) -> np.ndarray:
    """Per-image KL(h ‖ softmax(log p / T))."""
    z = log_p / temperature
    log_q = z - logsumexp(z, axis=1, keepdims=True)
    return xlogy(h, h).sum(1) - (h * log_q).sum(1)


def calibrated_kl(probs, human_probs) -> np.ndarray:
    """Per-image KL(human ‖ model) after temperature scaling, cross-fitted: the temperature that minimises the mean
    KL is fitted on the even-indexed images and applied to the odd-indexed ones, and vice versa.

    Temperature (calibration) rescales every prediction alike; what remains is how the model's uncertainty is
    distributed over images and classes. p^(1/T) renormalised equals softmax(logits / T), so probabilities suffice.
    """
    p, h = _distributions(probs, "probs"), _distributions(human_probs, "human_probs")
    if p.shape != h.shape or len(p) < 4:
        raise TradeoffsError(f"probs {p.shape} and human_probs {h.shape}: need the same shape and at least 4 images.")
    log_p = np.log(np.clip(p, 1e-12, None))
    out = np.empty(len(p))
    for fit, apply in ((slice(0, None, 2), slice(1, None, 2)), (slice(1, None, 2), slice(0, None, 2))):
        best = minimize_scalar(lambda t: _kl_at(log_p[fit], h[fit], np.exp(t)).mean(), bounds=(-5.0, 5.0),
                               method="bounded", options={"xatol": 1e-4})
        out[apply] = _kl_at(log_p[apply], h[apply], float(np.exp(best.x)))
    return out


def human_label_alignment(probs, human_probs) -> dict[str, float]:
    """Model predictive distributions [N, K] against human label distributions [N, K] (e.g. CIFAR-10H).

    cross_entropy = mean_i -Σ_k h_ik ln max(p_ik, 1e-12); kl = mean_i KL(h_i || p_i) with the same clipping;
    kl_calibrated = mean of `calibrated_kl` (the same KL after cross-fitted temperature scaling);
    top1_agreement = share of images where argmax p == argmax h (first index on ties);
    entropy_spearman = Spearman ρ between per-image entropies of p and h (NaN if either is constant).
    """
    p, h = _distributions(probs, "probs"), _distributions(human_probs, "human_probs")
    if p.shape != h.shape:
        raise TradeoffsError(f"probs {p.shape} and human_probs {h.shape} differ; pass the same images and classes.")
    log_p = np.log(np.clip(p, 1e-12, None))
    ce = -(h * log_p).sum(1)
    kl = xlogy(h, h).sum(1) - (h * log_p).sum(1)
    h_p, h_h = entr(p).sum(1), entr(h).sum(1)
    rho = spearmanr(h_p, h_h).statistic if np.ptp(h_p) > 0 and np.ptp(h_h) > 0 else float("nan")
    calibrated = float(calibrated_kl(p, h).mean()) if len(p) >= 4 else float("nan")
    return {"cross_entropy": float(ce.mean()), "kl": float(kl.mean()), "kl_calibrated": calibrated,
            "top1_agreement": float((p.argmax(1) == h.argmax(1)).mean()),
            "entropy_spearman": float(rho), "n": len(p)}


# ---------------------------------------------------------------- saliency and ClickMe-style map alignment

def saliency(model_module: torch.nn.Module, images: torch.Tensor, labels) -> torch.Tensor:
    """Vanilla-gradient saliency [N, H, W]: max over channels of |∂ logit_label / ∂ input|, one backward pass.

    `images` is the preprocessed batch [N, C, H, W]; the model must be in eval mode (in train mode BatchNorm mixes
    the images of a batch). Parameter gradients are not touched.
    """
    if model_module.training:
        raise TradeoffsError("the model is in train mode; call model.eval() first (BatchNorm would mix the batch).")
    if images.ndim != 4 or len(images) == 0:
        raise TradeoffsError(f"images have shape {tuple(images.shape)}; expected a non-empty [N, C, H, W] batch.")
    y = torch.as_tensor(labels, device=images.device).long()
    if y.shape != (len(images),):
        raise TradeoffsError(f"labels have shape {tuple(y.shape)}; expected ({len(images)},).")
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model_module(x)
        if logits.ndim != 2 or ((y < 0) | (y >= logits.shape[1])).any():
            raise TradeoffsError(f"model output {tuple(logits.shape)} is not [N, classes] covering labels; "
                                 "pass a classifier that returns logits.")
        (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x)
    return grad.abs().amax(dim=1)


def _gaussian_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Harmonization's kernel: exp(-(x²+y²)/2σ²) normalised to sum 1, on x = -5..4 (columns), y = 4..-5 (rows)."""
    lo, hi = -(size - 1) // 2, (size - 1) // 2  # floor division: -5, 4 for size 10
    xs = torch.arange(lo, hi + 1, dtype=torch.float64)
    ys = torch.arange(hi, lo - 1, -1, dtype=torch.float64)
    k = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def clickme_blur(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Harmonization's ClickMe heatmap preprocessing: bilinear resize to 64×64, blur with a 10×10 Gaussian
    (σ = 10) with TensorFlow 'SAME' zero padding (4 before, 5 after), bilinear resize to `size`."""
    x = F.interpolate(maps[:, None].double(), size=(BLUR_GRID, BLUR_GRID), mode="bilinear", align_corners=False)
    k = _gaussian_kernel()
    lo = (k.shape[0] - 1) // 2
    x = F.conv2d(F.pad(x, (lo, k.shape[1] - 1 - lo, lo, k.shape[0] - 1 - lo)), k[None, None])
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0]


def _rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / den, np.nan)


def map_alignment(saliency_maps, human_maps, ceiling: float = CLICKME_CEILING,
                  blur_saliency: bool = False) -> np.ndarray:
    """Per-image Spearman ρ between a saliency map [N, H, W] and a human map [N, H', W'], divided by `ceiling`.

    As in Harmonization (serre-lab/Harmonization, evaluation/click_me.py), only the human maps are smoothed
    (`clickme_blur`, resized back to H×W); ``blur_saliency=True`` smooths the saliency maps the same way too.
    A constant map gives NaN. Harmonization's alignment score is the mean of this array.
    """
    s = torch.as_tensor(_finite(saliency_maps, "saliency_maps", 3))
    h = torch.as_tensor(_finite(human_maps, "human_maps", 3))
    if len(s) != len(h):
        raise TradeoffsError(f"{len(s)} saliency maps but {len(h)} human maps; pass one human map per image.")
    if not ceiling > 0:
        raise TradeoffsError(f"ceiling must be positive, got {ceiling}.")
    size = tuple(s.shape[1:])
    h = clickme_blur(h, size)
    if blur_saliency:
        s = clickme_blur(s, size)
    return _rowwise_spearman(s.flatten(1).numpy(), h.flatten(1).numpy()) / ceiling
