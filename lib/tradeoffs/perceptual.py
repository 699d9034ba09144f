"""Perceptual scores of a network (Kumar et al. 2022): deep-feature distances scored against human judgements.

* `bapps_2afc`: the BAPPS 2AFC score per distortion subset and overall, for the distances `lpips_untrained`,
  `mean_pool` and `gram` of `tradeoffs.distances`, over the paper's layer choice (`paper_view`).
* `embed` / `pairwise` / `nearest`: the same three distances between every pair of two image sets (for
  nearest-neighbour measures), written as sums of squared Euclidean distances of per-layer embeddings.
* `neighbour_human_agreement` and `cifar10h_measures`: do feature-space nearest neighbours fall in classes that
  people also give an image (CIFAR-10H)? Plus accuracy and label-distribution alignment, from one forward pass.
* `inverted_u_fit`: the shape of a score against accuracy — fitted optimum, slope at the top, correlation beyond
  the optimum — with a bootstrap over independent units (models, training runs).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import xlogy
from scipy.stats import spearmanr
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from . import data, distances, features, metrics, observers, results
from .errors import TradeoffsError
from .models import Model

DISTANCES = {"lpips_untrained": distances.lpips_untrained, "mean_pool": distances.mean_pool, "gram": distances.gram}
BAPPS_SIZE = 64  # BAPPS patches are 64x64; Kumar et al. score them at that size
_STAGE = re.compile(r"layer\d+")


class ClassTokens(nn.Module):
    """A timm ViT seen through the class token after each block: layers ``blocks.<i>.cls`` ([N, C]) and logits."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.num_classes = getattr(vit, "num_classes", 1000)

    def layer_names(self) -> list[str]:
        return [f"blocks.{i}.cls" for i in range(len(self.vit.blocks))] + ["logits"]

    def forward_layers(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """One forward pass; each block's output token 0 (the class token) is taken by a forward hook."""
        out: dict[str, torch.Tensor] = {}
        wanted = [n for n in names if n != "logits"]
        hooks = [self.vit.blocks[int(n.split(".")[1])].register_forward_hook(
            lambda _m, _i, o, n=n: out.__setitem__(n, o[:, 0])) for n in wanted]
        try:
            logits = self.vit(x)
        finally:
            for h in hooks:
                h.remove()
        out["logits"] = logits
        return {n: out[n] for n in names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


def is_vit(model: Model) -> bool:
    """A transformer with a class token and a list of blocks (timm VisionTransformer and relatives)."""
    return getattr(model.module, "cls_token", None) is not None and hasattr(model.module, "blocks")


def paper_view(model: Model) -> tuple[Model, list[str]]:
    """Kumar et al.'s layer choice, taken from the model's own `layers()`: (model to extract from, layer names).

    ResNets (timm or CIFAR): the stage outputs ``layer1``, ``layer2``, ... ; ViTs: the class token after each block
    (through `ClassTokens`); any other family: every feature layer the model reports (its feature pyramid).
    """
    if is_vit(model):
        view = dataclasses.replace(model, module=ClassTokens(model.module))
        return view, [n for n in view.layers() if n != "logits"]
    names = [n for n in model.layers() if n != "logits"]
    stages = [n for n in names if _STAGE.fullmatch(n)]
    if stages:
        return model, stages
    if not names:
        raise TradeoffsError(f"{model.name} reports no feature layers (only {model.layers()}); pass layers= explicitly.")
    return model, names


def for_patches(model: Model, input_size: int | None = None) -> Model:
    """The model with preprocessing for whole patches: no centre crop; resized to `input_size`, or to the model's own
    input size when None (for a timm ViT built with ``img_size=...``, that size)."""
    module = model.module.vit if isinstance(model.module, ClassTokens) else model.module
    if input_size is None:
        native = getattr(getattr(module, "patch_embed", None), "img_size", None)
        size = tuple(native) if native is not None else model.preprocess.input_size
    else:
        if input_size < 8:
            raise TradeoffsError(f"input_size must be at least 8 pixels, got {input_size}.")
        size = (input_size, input_size)
    return dataclasses.replace(model, preprocess=dataclasses.replace(model.preprocess, input_size=size, crop_pct=1.0))


def human_2afc(p) -> float:
    """Score of a human drawn at random from the judges: mean of p² + (1-p)² (the BAPPS human ceiling)."""
    p = np.asarray(p, dtype=float)
    return float(np.mean(p ** 2 + (1 - p) ** 2))


def bapps_2afc(model: Model, root: str | Path, layers: Sequence[str] | None = None, *,
               subsets: str | Sequence[str] | None = None, distance_names: Sequence[str] = tuple(DISTANCES),
               input_size: int | None = None, limit: int | None = None, chunk: int = 256, batch_size: int = 64,
               device: str = "auto", progress: bool = True) -> xr.Dataset:
    """BAPPS 2AFC scores of `model` on the val triplets under `root` (`data.bapps_2afc` layout), patches at 64x64.

    layers: None = `paper_view(model)`; input_size: see `for_patches`; limit: the first `limit` triplets per subset.
    Returns dims ``distance``, ``subset`` (each subset, then "overall" = unweighted mean over subsets, as LPIPS
    reports) and ``triplet``: ``score`` (distance, subset), ``human`` and ``n_triplets`` (subset), and per triplet
    ``d0``, ``d1``, ``triplet_score`` (distance, triplet) and ``p``. Distances are cached per chunk of triplets.
    """
    unknown = [d for d in distance_names if d not in DISTANCES]
    if unknown or not distance_names:
        raise TradeoffsError(f"unknown distance(s) {unknown or 'none given'}; use some of {', '.join(DISTANCES)}.")
    triplets = data.bapps_2afc(root, subsets)
    if limit is not None:
        triplets = triplets.groupby("subset", sort=False).head(limit).reset_index(drop=True)
    view, chosen = paper_view(model) if layers is None else (model, list(layers))
    view = for_patches(view, input_size)
    chosen = features.check_layers(view, chosen)
    weights = features.weights_key(view)
    patches = _patches(tuple(triplets["ref"]), tuple(triplets["p0"]), tuple(triplets["p1"]))
    parts = []
    starts = range(0, len(triplets), chunk)
    for start in tqdm(starts, desc=f"BAPPS {model.name}", unit="chunk", disable=not progress, leave=False):
        rows = triplets.iloc[start:start + chunk]
        images = np.concatenate(list(patches[:, start:start + chunk]))
        key = results.content_key("bapps-2afc-v1", weights, repr(view.preprocess), images, chosen, list(distance_names))
        parts.append(results.cached("bapps", key, lambda images=images, n=len(rows): _distances(
            view, images, n, chosen, distance_names, batch_size, device)))
    d = xr.concat(parts, dim="triplet")
    p = triplets["p"].to_numpy()
    per = np.stack([metrics.two_afc(d["d0"].sel(distance=k).values, d["d1"].sel(distance=k).values, p)[0]
                    for k in distance_names])
    names = list(dict.fromkeys(triplets["subset"]))
    by_subset = np.stack([per[:, (triplets["subset"] == s).to_numpy()].mean(1) for s in names], axis=1)
    score = np.concatenate([by_subset, by_subset.mean(1, keepdims=True)], axis=1)
    human = [human_2afc(p[(triplets["subset"] == s).to_numpy()]) for s in names]
    counts = triplets["subset"].value_counts().reindex(names).to_numpy()
    return xr.Dataset(
        {"score": (("distance", "subset"), score), "human": ("subset", [*human, float(np.mean(human))]),
         "n_triplets": ("subset", [*counts, int(counts.sum())]), "d0": (("distance", "triplet"), d["d0"].values),
         "d1": (("distance", "triplet"), d["d1"].values), "triplet_score": (("distance", "triplet"), per),
         "p": ("triplet", p)},
        coords={"distance": list(distance_names), "subset": [*names, "overall"],
                "triplet_subset": ("triplet", triplets["subset"].to_numpy()),
                "triplet_id": ("triplet", triplets["id"].to_numpy())},
        attrs={"model": model.name, "layers": ",".join(chosen), "input_size": str(view.preprocess.input_size),
               "overall": "unweighted mean of the subset scores"})


@functools.lru_cache(maxsize=1)
def _patches(ref: tuple[str, ...], p0: tuple[str, ...], p1: tuple[str, ...]) -> np.ndarray:
    """The triplets' patches as uint8 [3, N, 64, 64, 3] (ref, p0, p1), kept for the next model or checkpoint."""
    return np.stack([data.load_images(paths, size=BAPPS_SIZE) for paths in (ref, p0, p1)])


def _distances(view: Model, images: np.ndarray, n: int, layers: list[str], names: Sequence[str], batch_size: int,
               device: str) -> xr.Dataset:
    """d(ref, p0) and d(ref, p1) of `n` triplets stacked as [ref; p0; p1] in `images`."""
    feats = features.to_tensors(features.extract(view, images, layers, batch_size=batch_size, device=device,
                                                 cache=False, progress=False))
    ref, p0, p1 = ({k: v[i * n:(i + 1) * n] for k, v in feats.items()} for i in range(3))
    d0 = np.stack([DISTANCES[k](ref, p0).numpy() for k in names])
    d1 = np.stack([DISTANCES[k](ref, p1).numpy() for k in names])
    return xr.Dataset({"d0": (("distance", "triplet"), d0), "d1": (("distance", "triplet"), d1)},
                      coords={"distance": list(names)})


# ---------------------------------------------------------------- all-pairs distances

def _by_location(x: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W], [N,T,C] or [N,C] as [N, C, L]."""
    if x.ndim == 4:
        return x.flatten(2)
    if x.ndim == 3:
        return x.transpose(1, 2)
    if x.ndim == 2:
        return x.unsqueeze(-1)
    raise TradeoffsError(f"features of shape {tuple(x.shape)}: expected [N,C,H,W], [N,T,C] or [N,C].")


def embed(kind: str, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-layer vectors e_l [N, D] such that distance `kind` between images a and b is Σ_l ||e_l(a) - e_l(b)||²:
    lpips_untrained: channel-normalised maps / sqrt(H·W); mean_pool: normalised spatial means; gram: the Gram matrix."""
    if kind not in DISTANCES:
        raise TradeoffsError(f"unknown distance {kind!r}; use one of {', '.join(DISTANCES)}.")
    out = {}
    for layer, x in feats.items():
        f = _by_location(torch.as_tensor(x).float())
        if kind == "lpips_untrained":
            out[layer] = distances.unit_normalize(f, dim=1).flatten(1) / f.shape[2] ** 0.5
        elif kind == "mean_pool":
            out[layer] = distances.unit_normalize(f.mean(2), dim=1)
        else:
            out[layer] = distances.gram_matrix(torch.as_tensor(x).float()).flatten(1)
    return out


def pairwise(kind: str, queries: dict[str, torch.Tensor], references: dict[str, torch.Tensor]) -> torch.Tensor:
    """Distance `kind` between every query and every reference image: [Q, R], summed over layers."""
    if set(queries) != set(references) or not queries:
        raise TradeoffsError("queries and references must have the same, non-empty set of layers.")
    eq, er = embed(kind, queries), embed(kind, references)
    return sum(torch.cdist(eq[k].double(), er[k].double()).pow(2) for k in eq)


def nearest(kind: str, queries: dict[str, torch.Tensor], references: dict[str, torch.Tensor],
            block: int = 512) -> np.ndarray:
    """Index of each query's nearest reference under distance `kind` (first index on ties), in blocks of queries."""
    n = len(next(iter(queries.values())))
    return np.concatenate([pairwise(kind, {k: v[s:s + block] for k, v in queries.items()}, references)
                           .argmin(1).numpy() for s in range(0, n, block)])


def neighbour_human_agreement(neighbour_labels, human_probs) -> pd.DataFrame:
    """Per query image: `human_prob` = share of human votes for the nearest neighbour's class, and `plausible`
    = whether any human chose that class (CIFAR-10H-style label distributions [Q, K])."""
    h = np.asarray(human_probs, dtype=float)
    lab = np.asarray(neighbour_labels)
    if h.ndim != 2 or lab.shape != (len(h),) or lab.min() < 0 or lab.max() >= h.shape[1]:
        raise TradeoffsError(f"need one neighbour label in 0..{h.shape[-1] - 1} per row of human_probs {h.shape}.")
    prob = h[np.arange(len(h)), lab]
    return pd.DataFrame({"human_prob": prob, "plausible": (prob > 0).astype(float)})


def _cifar10h(model: Model, images: np.ndarray, labels: np.ndarray, human_probs: np.ndarray, n_reference: int,
              layers: Sequence[str] | None, batch_size: int, device: str, progress: bool) -> tuple[np.ndarray, pd.DataFrame]:
    """Predicted distributions [N, K] and the per-image table of `cifar10h_per_image`, from one forward pass."""
    if not 0 < n_reference < len(images):
        raise TradeoffsError(f"n_reference must split the {len(images)} images into references and queries, "
                             f"got {n_reference}.")
    chosen = paper_view(model)[1] if layers is None else list(layers)
    ds = features.extract(model, images, [*chosen, "logits"], pool="mean", batch_size=batch_size, device=device,
                          progress=progress)
    probs = observers.softmax_logits(ds["logits"].values)
    h = np.asarray(human_probs, dtype=float)
    log_p = np.log(np.clip(probs, 1e-12, None))  # the clipping of metrics.human_label_alignment
    feats = features.to_tensors(ds, chosen)
    refs = {k: v[:n_reference] for k, v in feats.items()}
    queries = {k: v[n_reference:] for k, v in feats.items()}
    nn_labels = np.asarray(labels)[nearest("mean_pool", queries, refs)]
    agreement = neighbour_human_agreement(nn_labels, h[n_reference:])
    pad = np.full(n_reference, np.nan)
    table = pd.DataFrame({"correct": (probs.argmax(1) == np.asarray(labels)).astype(float),
                          "kl": (xlogy(h, h) - h * log_p).sum(1), "cross_entropy": -(h * log_p).sum(1),
                          "kl_calibrated": metrics.calibrated_kl(probs, h),
                          "nn_human_prob": np.concatenate([pad, agreement["human_prob"].to_numpy()]),
                          "nn_plausible": np.concatenate([pad, agreement["plausible"].to_numpy()])})
    return probs, table.rename_axis("image")


def cifar10h_per_image(model: Model, images: np.ndarray, labels: np.ndarray, human_probs: np.ndarray, *,
                       n_reference: int, layers: Sequence[str] | None = None, batch_size: int = 256,
                       device: str = "auto", progress: bool = False) -> pd.DataFrame:
    """Per image: ``correct`` (top-1), ``kl`` = KL(human ‖ model) and ``cross_entropy`` (nats, model probabilities
    clipped at 1e-12 as in `metrics.human_label_alignment`), ``kl_calibrated`` (`metrics.calibrated_kl`), and for the query images (index >= `n_reference`)
    ``nn_human_prob`` / ``nn_plausible`` of their nearest reference under the mean-pool distance over `layers`
    (default: the paper's choice, `paper_view`), scored by `neighbour_human_agreement`; NaN for references."""
    return _cifar10h(model, images, labels, human_probs, n_reference, layers, batch_size, device, progress)[1]


def cifar10h_measures(model: Model, images: np.ndarray, labels: np.ndarray, human_probs: np.ndarray, *,
                      n_reference: int, layers: Sequence[str] | None = None, batch_size: int = 256,
                      device: str = "auto", progress: bool = False) -> dict[str, float]:
    """Means of `cifar10h_per_image` (``accuracy`` = mean of ``correct``; ``nn_*`` over the queries) together with
    every key of `metrics.human_label_alignment` (kl, cross_entropy, top1_agreement, entropy_spearman, n)."""
    probs, table = _cifar10h(model, images, labels, human_probs, n_reference, layers, batch_size, device, progress)
    return {"accuracy": float(table["correct"].mean()), **metrics.human_label_alignment(probs, human_probs),
            "nn_human_prob": float(table["nn_human_prob"].mean()), "nn_plausible": float(table["nn_plausible"].mean())}


def _shape(x: np.ndarray, y: np.ndarray) -> list[float]:
    """[a, optimum, slope at max x, Spearman rho beyond the optimum, points beyond] of one quadratic fit."""
    if len(np.unique(x)) < 3:
        return [np.nan] * 5
    a, b, c = np.polyfit(x, y, 2)
    lo, hi = x.min(), x.max()
    vertex = -b / (2 * a) if a != 0 else np.nan
    candidates = [lo, hi] + ([vertex] if a < 0 and lo < vertex < hi else [])
    optimum = max(candidates, key=lambda t: np.polyval([a, b, c], t))
    beyond = x > optimum
    defined = beyond.sum() >= 4 and np.ptp(x[beyond]) > 0 and np.ptp(y[beyond]) > 0
    rho = spearmanr(x[beyond], y[beyond]).statistic if defined else np.nan
    return [a, optimum, 2 * a * hi + b, rho, float(beyond.sum())]


def inverted_u_fit(x, y, units=None, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Shape of y against x under a quadratic fit y = a x² + b x + c, with percentile 95% CIs.

    optimum: where the fitted curve is highest within [min x, max x] (the vertex if concave and inside, else an end);
    slope_at_top: the fitted slope 2a·max(x) + b (negative = falling at the highest x); rho_beyond: Spearman ρ of the
    points with x > optimum (NaN with fewer than 4). The bootstrap resamples whole `units` (e.g. training runs whose
    checkpoints are not independent; default: every point its own unit); ``ci`` maps each statistic to (low, high)
    and ``rho_defined_share`` says in how many resamples ρ was defined. ``gap`` is the widest stretch of x without
    data; ``optimum_in_gap`` is True when the optimum lies inside it and it spans more than a quarter of the x range
    (the parabola's shape there is then set by the points on either side, not by data near the optimum).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    units = np.arange(len(x)) if units is None else np.asarray(units)
    if x.ndim != 1 or x.shape != y.shape or units.shape != x.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise TradeoffsError(f"x, y and units must be finite 1-D arrays of one length, got {x.shape}, {y.shape}, {units.shape}.")
    if len(np.unique(x)) < 3 or len(x) < 5:
        raise TradeoffsError(f"a quadratic shape needs at least 5 points with 3 distinct x, got {len(x)} points.")
    if n_boot < 100:
        raise TradeoffsError(f"n_boot={n_boot} is too small for a percentile CI; use at least 1000.")
    groups = [np.flatnonzero(units == u) for u in dict.fromkeys(units.tolist())]
    rng = np.random.default_rng(seed)
    boot = np.array([_shape(x[idx], y[idx]) for idx in (
        np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))]) for _ in range(n_boot))])
    names = ["a", "optimum", "slope_at_top", "rho_beyond"]
    ci = {k: tuple(float(v) for v in np.nanpercentile(boot[:, j], [2.5, 97.5])) if np.isfinite(boot[:, j]).any()
          else (np.nan, np.nan) for j, k in enumerate(names)}
    est = _shape(x, y)
    distinct = np.unique(x)
    widest = int(np.argmax(np.diff(distinct)))
    gap = (float(distinct[widest]), float(distinct[widest + 1]))
    in_gap = bool(gap[1] - gap[0] > 0.25 * np.ptp(x) and gap[0] < est[1] < gap[1])
    return {**dict(zip(names, map(float, est[:4]))), "n_beyond": int(est[4]), "n": len(x), "units": len(groups),
            "x_max": float(x.max()), "ci": ci, "rho_defined_share": float(np.isfinite(boot[:, 3]).mean()),
            "gap": gap, "optimum_in_gap": in_gap}
