"""Models as observers: their answers to the human experiments, written and scored the way people's are.

Two human measures, one section each (ClickMe maps: `tradeoffs.clickme`):

* model-vs-human psychophysics (Geirhos et al.): a model's 16-class decisions on the stimuli people saw, in the human
  trials' own schema (`model_trials`), then accuracy, shape bias and error consistency with every human observer
  (`observer_table`, or `human_alignment` for one model);
* CIFAR-10H (Peterson et al. 2019): a CIFAR-10 model's predictive distribution against the human label distribution
  (`cifar10h_alignment`);
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from . import data, features, metrics
from .errors import TradeoffsError
from .models import Model

TRIAL_COLUMNS = data.TRIAL_COLUMNS
HUMAN_PREFIX = "subject-"  # model-vs-human names its human observers subject-01 ... subject-10
STIMULUS_COLUMNS = ["dataset", "condition", "image", "category", "texture"]


def softmax_logits(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (float64)."""
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()


def _logits(model: Model, images: np.ndarray, batch_size: int, device: str, cache: bool, progress: bool) -> np.ndarray:
    return features.extract(model, images, ["logits"], batch_size=batch_size, device=device, cache=cache,
                            progress=progress)["logits"].values


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing or table.empty:
        raise TradeoffsError(f"{what} needs a non-empty trial table with columns {list(columns)} (missing {missing}); "
                             "build it with tradeoffs.data.human_trials or model_trials.")


def _subset(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `n` of `n_total` items drawn without replacement (all when n is None or >= n_total)."""
    if n is not None and n < 1:
        raise TradeoffsError(f"n_images must be a positive number or None (all), got {n}.")
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


# ---------------------------------------------------------------- model-vs-human psychophysics

def imagenet_decisions(model: Model, images: np.ndarray, *, batch_size: int = 32, device: str = "auto",
                       cache: bool = True, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """1000-way probabilities, 16-class probabilities and the 16 category names, for uint8 images [N,H,W,3]."""
    probs = softmax_logits(_logits(model, images, batch_size, device, cache, progress))
    probs16, categories = metrics.imagenet_to_16(probs, data.imagenet_16class_indices())
    return probs, np.asarray(probs16), list(categories)


def shown_stimuli(human: pd.DataFrame, dataset: str, *, n_images: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The (condition, image) pairs people saw in `dataset` with their files; a seeded random subset if n_images."""
    files = data.mvh_stimuli(dataset)[["image", "path"]]  # refuses datasets whose images are not obtainable
    shown = human.loc[human["dataset"] == dataset, STIMULUS_COLUMNS].drop_duplicates()
    if shown.empty:
        raise TradeoffsError(f"the human trials hold no {dataset!r} trials; load them with "
                             f"tradeoffs.data.human_trials([{dataset!r}]).")
    shown = shown.merge(files, on="image", how="inner", validate="many_to_one")
    shown = shown.sort_values(["condition", "image"]).reset_index(drop=True)
    return shown.iloc[_subset(len(shown), n_images, seed)].reset_index(drop=True)


def model_trials(model: Model, dataset: str, human: pd.DataFrame, *, observer: str | None = None,
                 n_images: int | None = None, seed: int = 0, batch_size: int = 32, device: str = "auto",
                 cache: bool = True, progress: bool = True) -> pd.DataFrame:
    """The model's 16-class decisions on the (condition, image) pairs people saw in `dataset`, as trials.

    Decisions follow model-vs-human: mean softmax probability over each category's ImageNet classes, then arg-max.
    `observer` names the model in the table (default `model.name`; e.g. "resnet18 (random init)").
    """
    shown = shown_stimuli(human, dataset, n_images=n_images, seed=seed)
    images = data.load_images(shown["path"].tolist())
    _, probs16, categories = imagenet_decisions(model, images, batch_size=batch_size, device=device, cache=cache,
                                                progress=progress)
    out = shown.drop(columns="path").assign(
        observer=observer or model.name, response=np.asarray(categories)[probs16.argmax(axis=1)],
        rt=np.nan, trial=np.arange(1, len(shown) + 1))
    return out[list(TRIAL_COLUMNS)]


def humans_in(trials: pd.DataFrame) -> list[str]:
    """The human observers of a trial table (model-vs-human's `subject-NN` names), in order of appearance."""
    return [o for o in pd.unique(trials["observer"]) if str(o).startswith(HUMAN_PREFIX)]


def restrict(human: pd.DataFrame, to: pd.DataFrame) -> pd.DataFrame:
    """The rows of `human` whose (dataset, condition, image) also occurs in `to` (e.g. a model's stimulus subset)."""
    keys = to[metrics.TRIAL_KEYS].drop_duplicates()
    return human.merge(keys, on=metrics.TRIAL_KEYS, how="inner")[list(human.columns)]


def observer_table(trials: pd.DataFrame, humans: Sequence[str] | None = None) -> xr.Dataset:
    """Every observer's scores per dataset, people and models alike; dims (observer, dataset).

    accuracy: share of trials with response == category (for cue-conflict the shape class);
    shape_bias: shape / (shape + texture) decisions on cue-conflict trials with shape != texture (dim observer);
    error_consistency_mean / _sd / _min / _max: Cohen's kappa of trial-by-trial errors with each human observer
    (never with oneself), over the trials both saw; kappa: the full matrix (observer, observer2, dataset).
    `humans` defaults to the `subject-NN` observers; coordinate `kind` says "human" or "model".
    """
    _require(trials, [*metrics.TRIAL_KEYS, "observer", "category", "texture", "response"], "observer_table")
    observers = list(pd.unique(trials["observer"]))
    humans = humans_in(trials) if humans is None else list(humans)
    if not humans or not set(humans) <= set(observers):
        raise TradeoffsError(f"observer_table needs the human trials too (observers {humans or 'subject-NN'} are not "
                             "all in the table); concatenate model and human trials first.")
    datasets = sorted(trials["dataset"].unique())
    accuracy = metrics.observer_accuracy(trials, by=("dataset",)).unstack("dataset").reindex(index=observers,
                                                                                             columns=datasets)
    if (trials["dataset"] == "cue-conflict").any():
        shape_bias = metrics.shape_bias_by_observer(trials).reindex(observers).to_numpy()
    else:
        shape_bias = np.full(len(observers), np.nan)
    kappa = metrics.error_consistency_matrix(trials, observers, by=("dataset",)).transpose(
        "observer", "observer2", "dataset").reindex(dataset=datasets)
    n_shared = kappa["n_trials"].reset_coords(drop=True)
    kappa = kappa.reset_coords(drop=True)
    with_humans = kappa.sel(observer2=humans)
    with_humans = with_humans.where(with_humans["observer"] != with_humans["observer2"])
    ds = xr.Dataset({
        "accuracy": (("observer", "dataset"), accuracy.to_numpy(dtype=float)),
        "shape_bias": ("observer", shape_bias.astype(float)),
        "error_consistency_mean": with_humans.mean("observer2"),
        "error_consistency_sd": with_humans.std("observer2", ddof=1),
        "error_consistency_min": with_humans.min("observer2"),
        "error_consistency_max": with_humans.max("observer2"),
        "kappa": kappa,
        "n_shared_trials": n_shared,
        "n_trials": (("observer", "dataset"), trials.groupby(["observer", "dataset"]).size()
                     .unstack("dataset").reindex(index=observers, columns=datasets).fillna(0).to_numpy(dtype=int)),
    }, coords={"observer": observers, "dataset": datasets,
               "kind": ("observer", ["human" if o in humans else "model" for o in observers])})
    for name, text in (("accuracy", "16-class accuracy (share of trials)"), ("shape_bias", "shape bias (fraction)"),
                       ("error_consistency_mean", "mean Cohen's kappa with the human observers")):
        ds[name].attrs["long_name"] = text
    return ds


def human_alignment(model: Model, datasets: Sequence[str] = data.STIMULUS_SETS, *, human: pd.DataFrame | None = None,
                    observer: str | None = None, n_images: int | Mapping[str, int] | None = None, seed: int = 0,
                    batch_size: int = 32, device: str = "auto", progress: bool = True) -> xr.Dataset:
    """One model's accuracy, shape bias and error consistency with the people of model-vs-human (dim dataset).

    `n_images` (one number, or one per dataset) scores a seeded random subset, and the humans on the same subset.
    """
    human = data.human_trials(list(datasets)) if human is None else human
    per = n_images if isinstance(n_images, Mapping) else {d: n_images for d in datasets}
    trials = pd.concat([model_trials(model, d, human, observer=observer, n_images=per.get(d), seed=seed,
                                     batch_size=batch_size, device=device, progress=progress) for d in datasets],
                       ignore_index=True)
    table = observer_table(pd.concat([restrict(human, trials), trials], ignore_index=True))
    return table.sel(observer=trials["observer"].iloc[0]).drop_vars(["kappa", "n_shared_trials"])


def trials_to_dataset(trials: pd.DataFrame) -> xr.Dataset:
    """Trials of several observers on the same stimuli as a Dataset: `response` (observer, stimulus), stimulus coords.

    Every observer must have answered every stimulus once (model trials do); `dataset_to_trials` inverts this.
    """
    _require(trials, [*STIMULUS_COLUMNS, "observer", "response"], "trials_to_dataset")
    if trials.duplicated([*metrics.TRIAL_KEYS, "observer"]).any():
        raise TradeoffsError("trials_to_dataset got repeated (observer, dataset, condition, image) trials; "
                             "keep one answer per observer and stimulus.")
    wide = trials.pivot(index=STIMULUS_COLUMNS, columns="observer", values="response")
    if wide.isna().any().any():
        raise TradeoffsError("trials_to_dataset needs every observer on every stimulus; score one stimulus set "
                             "(same n_images and seed) for all models.")
    observers = list(pd.unique(trials["observer"]))
    stim = wide.index.to_frame(index=False)
    return xr.Dataset({"response": (("observer", "stimulus"), wide[observers].to_numpy(dtype=str).T)},
                      coords={"observer": observers, "stimulus": np.arange(len(stim)),
                              **{c: ("stimulus", stim[c].to_numpy(dtype=str)) for c in STIMULUS_COLUMNS}})


def dataset_to_trials(ds: xr.Dataset) -> pd.DataFrame:
    """The trial table (`TRIAL_COLUMNS`) of a Dataset written by `trials_to_dataset`."""
    stim = pd.DataFrame({c: ds[c].values.astype(str) for c in STIMULUS_COLUMNS})
    frames = [stim.assign(observer=str(o), response=ds["response"].sel(observer=o).values.astype(str), rt=np.nan,
                          trial=stim.groupby("dataset").cumcount().to_numpy() + 1) for o in ds["observer"].values]
    return pd.concat(frames, ignore_index=True)[list(TRIAL_COLUMNS)]


# ---------------------------------------------------------------- CIFAR-10H

def cifar10_probs(model: Model, images: np.ndarray, *, batch_size: int = 256, device: str = "auto",
                  cache: bool = True, progress: bool = True) -> np.ndarray:
    """Predictive distribution [N,10] of a CIFAR-10 model on uint8 images [N,32,32,3]."""
    return softmax_logits(_logits(model, images, batch_size, device, cache, progress))


def cifar10h_alignment(model: Model, *, n_images: int | None = None, seed: int = 0, batch_size: int = 256,
                       device: str = "auto", progress: bool = True) -> dict[str, float]:
    """Test accuracy and agreement with the CIFAR-10H human label distributions of a CIFAR-10 model.

    Keys: accuracy (top-1 against the official labels), cross_entropy, kl, top1_agreement, entropy_spearman
    (`metrics.human_label_alignment`), n. `n_images` scores a seeded random subset of the 10,000 test images.
    """
    test = data.cifar10("test")
    human, _ = data.cifar10h()
    idx = _subset(len(human), n_images, seed)
    probs = cifar10_probs(model, test["images"].values[idx], batch_size=batch_size, device=device, progress=progress)
    labels = test["labels"].values[idx]
    return {"accuracy": metrics.accuracy(probs, labels, k=1)[1], **metrics.human_label_alignment(probs, human[idx])}
