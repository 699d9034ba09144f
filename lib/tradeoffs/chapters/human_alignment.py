"""Human alignment: does ImageNet accuracy buy human-like strategies?

Every model answers the model-vs-human psychophysics trials as a participant would; people and models are then scored
alike (16-class accuracy, shape bias, trial-by-trial error consistency with each human observer) and the scores are
correlated with the models' published ImageNet top-1. CIFAR-10 ResNets are compared with the CIFAR-10H label
distributions, a published serre-lab table of ClickMe alignment scores is re-analysed (quadratic vertex, correlations on
each side of it), and the `full` profile scores the ClickMe maps themselves. The verdict reads the declared tests of
`tradeoffs.claims`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from .. import chapters, claims, clickme, data, metrics, observers, plots, registry, results, stats, store, verdicts
from .. import models as zoo
from ..errors import TradeoffsError

CLAIM = "human_alignment"
OFFLINE_IMAGENET = [n for n in zoo.named_models() if not n.startswith("cifar10_resnet")]
PRETRAINED_CIFAR = ["cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44", "cifar10_resnet56"]
TIMM_ZOO = ["resnet18.tv_in1k", "vgg16.tv_in1k", "densenet121.tv_in1k", "resnet50.tv_in1k", "inception_v3.tv_in1k",
            "mobilenetv3_large_100.ra_in1k", "efficientnet_b0.ra_in1k", "regnety_032.ra_in1k",
            "deit_small_patch16_224.fb_in1k", "convnext_tiny.fb_in1k", "swin_tiny_patch4_window7_224.ms_in1k",
            "vit_base_patch16_224.augreg2_in21k_ft_in1k", "convnext_base.fb_in22k_ft_in1k",
            "efficientnet_b3.ra2_in1k", "beit_base_patch16_224.in22k_ft_in22k_in1k"]
PROFILES = {
    "smoke": dict(models=["mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant", "mobilenet_v3_small_224_uint8"],
                  random_models=["mobilenetv3_small_100"], timm_models=[],
                  n_images={"cue-conflict": 64, "edge": 32, "silhouette": 32},
                  cifar_models=PRETRAINED_CIFAR, n_cifar=500, n_clickme=0),
    "default": dict(models=OFFLINE_IMAGENET, random_models=["tf_efficientnet_lite0", "mobilenetv3_small_100"],
                    timm_models=[], n_images={}, cifar_models=PRETRAINED_CIFAR, n_cifar=None, n_clickme=0),
    "full": dict(models=OFFLINE_IMAGENET, random_models=["tf_efficientnet_lite0", "mobilenetv3_small_100"],
                 timm_models=TIMM_ZOO, n_images={}, cifar_models=PRETRAINED_CIFAR, n_cifar=None, n_clickme=2000),
}
# Published numbers this page compares with (typed once here, with their sources; everything else is computed).
PUBLISHED = {
    "human_shape_bias": (0.959, "Geirhos et al. 2019 (ICLR), humans: 95.9% shape decisions on cue-conflict"),
    "ec_resnet50": (0.208, "model-vs-human README, 'Most human-like behaviour': ResNet-50, error consistency "
                           "averaged over its 17 datasets"),
    "ec_best": (0.281, "model-vs-human README: best listed error consistency (CLIP ViT-B, ViT-22B-560), 17 datasets"),
}
CIFAR_ROWS = {"accuracy": "test accuracy (offline images)", "cross_entropy": "cross-entropy to humans (nats)",
              "kl": "KL(humans ‖ model) (nats)",
              "kl_calibrated": "KL after temperature scaling (nats)", "top1_agreement": "top-1 agreement with humans",
              "entropy_spearman": "Spearman ρ of per-image entropies",
              "published_accuracy": "published accuracy (%, lossless)"}
_TOP1 = "published ImageNet top-1 (%)"
_CIFAR_ACC = "CIFAR-10 test accuracy on the offline images (%)"
_SERRE = "tables/serre_lab/onevision_model_type_reference.csv"
# The table's model_type column: cnn / vit / other, and "timm" for its one ResNet-ViT hybrid (vit_tiny_r_s16_p8),
# which is shown with the other hybrids under "other".
_OTHER = "other (hybrids, MLP-mixers)"
_MODEL_TYPES = {"cnn": "CNN", "vit": "ViT", "other": _OTHER, "timm": _OTHER}


def settings(profile: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's settings, overridden by the notebook parameters that are not None."""
    return chapters.settings(PROFILES, profile, given)


def _spearman(x, y) -> dict:
    """`stats.correlation` (Spearman, Bonett–Wright CI, exact p up to 10 points) over the finite pairs."""
    return {k: v for k, v in stats.correlation(x, y, "spearman", dropna=True).items() if k != "ci_method"}


# ---------------------------------------------------------------- model decisions and observer scores

def _observer_specs(P: Mapping[str, Any]) -> list[dict]:
    """One entry per model observer: its name in the tables, how to load it, and its metadata."""
    specs = [dict(observer=n, name=n, weights="pretrained") for n in [*P["models"], *P["timm_models"]]]
    specs += [dict(observer=f"{n} (random init)", name=n, weights="random") for n in P["random_models"]]
    return specs


def _load_model(spec: dict, seed: int) -> zoo.Model:
    if spec["weights"] == "random":
        torch.manual_seed(seed)
    return zoo.load(spec["name"], weights=spec["weights"])


def _compute_trials(P: Mapping[str, Any]) -> xr.Dataset:
    human = data.human_trials(list(data.STIMULUS_SETS))
    frames, meta = [], []
    for spec in tqdm(_observer_specs(P), desc="models", unit="model"):
        model = _load_model(spec, P["seed"])
        for dataset in data.STIMULUS_SETS:
            frames.append(observers.model_trials(model, dataset, human, observer=spec["observer"],
                                                 n_images=P["n_images"].get(dataset), seed=P["seed"],
                                                 device=P["device"]))
        meta.append(dict(top1=np.nan if model.meta.top1 is None else model.meta.top1, weights=spec["weights"],
                         source=model.meta.source, notes=model.meta.notes))
    ds = observers.trials_to_dataset(pd.concat(frames, ignore_index=True))
    meta = pd.DataFrame(meta, index=[s["observer"] for s in _observer_specs(P)]).reindex(ds["observer"].values)
    return ds.assign_coords({c: ("observer", meta[c].to_numpy()) for c in meta.columns})


def _trials_key(P: Mapping[str, Any]) -> str:
    mvh_digests = {e.path: e.sha256 for e in registry.entries() if e.path.startswith("model-vs-human/")}
    trial_keys = {k: P[k] for k in ("models", "random_models", "timm_models", "n_images", "seed")}
    return results.content_key("human_alignment_trials-v1", trial_keys, mvh_digests, observers, metrics, zoo)


def load_trials(P: Mapping[str, Any], profile: str) -> xr.Dataset:
    """Every model's decision on every human trial, stored or computed."""
    return store.load_or_compute(claims.result_name(CLAIM, "trials", profile), _trials_key(P),
                                   lambda: _compute_trials(P), profile=profile, parameters=P,
                                   tolerance={"rtol": 0, "atol": 0})


def _compute_observers(stored_trials: xr.Dataset) -> xr.Dataset:
    trials_models = observers.dataset_to_trials(stored_trials)
    people = observers.restrict(data.human_trials(list(data.STIMULUS_SETS)), to=trials_models)
    table = observers.observer_table(pd.concat([people, trials_models], ignore_index=True))
    meta = pd.DataFrame({c: stored_trials[c].values for c in ("top1", "weights", "source")},
                        index=stored_trials["observer"].values).reindex(table["observer"].values)
    meta["source"] = meta["source"].fillna("model-vs-human raw-data (human observers)")
    table = table.assign_coords(top1=("observer", meta["top1"].to_numpy(float)),
                                weights=("observer", meta["weights"].fillna("").to_numpy(str)),
                                source=("observer", meta["source"].to_numpy(str)))
    table["top1"].attrs["long_name"] = "published ImageNet-1k top-1 (%)"
    table["shape_bias_humans_pooled"] = metrics.shape_bias(people)
    return table


def load_observers(P: Mapping[str, Any], profile: str, stored_trials: xr.Dataset) -> xr.Dataset:
    """Accuracy, shape bias and error consistency of people and models, one row per observer, stored or computed."""
    key = results.content_key("human_alignment_observers-v1", _trials_key(P), observers, metrics)
    return store.load_or_compute(claims.result_name(CLAIM, "observers", profile), key,
                                   lambda: _compute_observers(stored_trials), profile=profile, parameters=P,
                                   tolerance={"rtol": 1e-9, "atol": 1e-12})


def _groups(obs: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """The human observers, the pretrained models and the random-init models."""
    people = obs.sel(observer=obs["kind"] == "human")
    is_model = (obs["kind"] == "model").values
    real = obs.sel(observer=is_model & (obs["weights"] == "pretrained").values)
    rand = obs.sel(observer=is_model & (obs["weights"] == "random").values)
    return people, real, rand


def _model_scores(real: xr.Dataset) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Top-1, shape bias and error consistency (mean of the datasets, as model-vs-human averages) per model."""
    return (real["top1"].to_pandas(), real["shape_bias"].to_pandas(),
            real["error_consistency_mean"].mean("dataset").to_pandas())


# ---------------------------------------------------------------- people first

def human_tables(obs: xr.Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Human shape bias (ours and the published value), and κ of people and models (one column per dataset)."""
    people, real, _ = _groups(obs)
    sb_people, ceiling = people["shape_bias"].to_pandas(), people["error_consistency_mean"].to_pandas()
    shape = pd.DataFrame({"ours": [float(obs["shape_bias_humans_pooled"]), sb_people.mean(), sb_people.min(),
                                   sb_people.max()],
                          "published": [PUBLISHED["human_shape_bias"][0], np.nan, np.nan, np.nan]},
                         index=["human shape bias, pooled", "mean over observers", "lowest observer",
                                "highest observer"]).round(3)
    kappa = pd.DataFrame({
        "human–human κ, mean over observers": ceiling.mean(),
        "SD over observers": ceiling.std(ddof=1),
        "lowest observer": ceiling.min(), "highest observer": ceiling.max(),
        "model–human κ, mean over models": real["error_consistency_mean"].mean("observer").to_pandas(),
        "best model": real["error_consistency_mean"].max("observer").to_pandas(),
    }).round(3)
    return shape, kappa.T


def people_text(obs: xr.Dataset) -> str:
    """Our human numbers against the published ones, and the models' κ against model-vs-human's."""
    people, real, _ = _groups(obs)
    sb_people, ceiling = people["shape_bias"].to_pandas(), people["error_consistency_mean"].to_pandas()
    return (
        f"Our human shape bias is {float(obs['shape_bias_humans_pooled']):.3f} pooled over all conflict trials and "
        f"{sb_people.mean():.3f} as the mean of the {people.sizes['observer']} observers (range "
        f"{sb_people.min():.3f}–{sb_people.max():.3f}), against the published "
        f"{PUBLISHED['human_shape_bias'][0]:.3f} ({PUBLISHED['human_shape_bias'][1]}). "
        f"People agree with one another well beyond chance: the mean human–human κ is "
        + ", ".join(f"{ceiling[d].mean():.2f} on {d}" for d in ceiling.columns)
        + ". We found no citable published human–human κ for these three datasets (the papers show them in figures), "
        f"so this ceiling is ours alone. For models, model-vs-human publishes κ averaged over its 17 datasets: "
        f"{PUBLISHED['ec_resnet50'][0]:.3f} for ResNet-50 and at most {PUBLISHED['ec_best'][0]:.3f} for the best "
        f"models ({PUBLISHED['ec_resnet50'][1]}); our {real.sizes['observer']} offline mobile models reach "
        f"{float(real['error_consistency_mean'].mean()):.3f} on average over the three datasets scored here.")


# ---------------------------------------------------------------- shape bias and error consistency against top-1

def _random_lines(ax: Axes, values: pd.Series) -> None:
    """Grey lines at the random-init models' values, one line style each, named in the legend (no labels to overlap)."""
    for (name, value), style in zip(values.items(), (":", "-.", "--")):
        if np.isfinite(value):
            ax.axhline(value, color="0.45", linestyle=style, linewidth=1.2, label=name)
    ax.legend(loc="best", fontsize="small")


def models_text(obs: xr.Dataset) -> str:
    """What the ImageNet models are (from their stored sources and the model catalogue; timm's zoo in `full`)."""
    real = _groups(obs)[1]
    source = real["source"].to_pandas()
    top1 = real["top1"].to_pandas()
    catalogue = zoo.available().set_index("name")
    offline = [n for n in top1.index if n in catalogue.index]
    hub = [n for n in top1.index if n not in catalogue.index]
    catalogue, source, top1 = catalogue.loc[offline], source[offline], top1[offline]
    tflite = source.str.contains(".tflite", regex=False)
    pixels = [size[0] for size in catalogue["input_size"]]
    floats = [n for n in offline if "float model" in source[n]]
    text = (f"The {len(offline)} ImageNet models scored here are offline mobile networks, not the state-of-the-art "
            f"networks Fel et al.'s claim is about: {int(tflite.sum())} int8-quantised TFLite graphs "
            f"({', '.join(sorted(catalogue['family'][tflite].unique()))}) and {int((~tflite).sum())} float networks "
            f"({', '.join(sorted(catalogue['family'][~tflite].unique()))}), with {top1.min():.1f}–{top1.max():.1f}% "
            f"published top-1 and {min(pixels)}–{max(pixels)} px inputs. "
            + "".join(f"`{n}` is placed at its float model's published top-1 ({top1[n]:.1f}%): the catalogue has no "
                      "verified figure for the 8-bit graph. " for n in floats))
    if hub:
        text += (f"{len(hub)} timm models with Hugging Face hub weights are added ({', '.join(hub)}), each at its "
                 "top-1 in timm's results table.")
    return text


def accuracy_figure(obs: xr.Dataset) -> Figure:
    """Shape bias and error consistency against published top-1, with the human ranges and random-init lines."""
    people, real, rand = _groups(obs)
    top1, shape_bias, ec = _model_scores(real)
    sb_people = people["shape_bias"].to_pandas()
    ec_people = people["error_consistency_mean"].mean("dataset").to_pandas()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    plots.human_band(axes[0], sb_people.min(), sb_people.max(), label="human observers (range)")
    plots.scatter_fit(axes[0], top1, shape_bias, fit="linear", point_labels=None, xlabel=_TOP1,
                      ylabel="shape bias (fraction of shape decisions)", title="Shape bias (cue-conflict)")
    plots.human_band(axes[1], ec_people.min(), ec_people.max(), label="human–human (range over observers)")
    plots.scatter_fit(axes[1], top1, ec, fit="linear", xlabel=_TOP1,
                      ylabel="error consistency with humans (κ)", title="Error consistency, mean of 3 datasets")
    _random_lines(axes[0], rand["shape_bias"].to_pandas())
    _random_lines(axes[1], rand["error_consistency_mean"].mean("dataset").to_pandas())
    axes[0].set_ylim(-0.02, 1.02)
    fig.tight_layout()
    return fig


def accuracy_text(obs: xr.Dataset) -> str:
    """Spearman ρ of top-1 with shape bias and with error consistency per dataset, and the models against people."""
    people, real, _ = _groups(obs)
    top1, shape_bias, ec = _model_scores(real)
    sb_people, ceiling = people["shape_bias"].to_pandas(), people["error_consistency_mean"].to_pandas()
    datasets = real["dataset"].values
    by_dataset = {d: _spearman(top1, real["error_consistency_mean"].sel(dataset=d)) for d in datasets}
    acc_rho = {d: _spearman(top1, real["accuracy"].sel(dataset=d))["r"] for d in datasets}
    overall, sb_rho = _spearman(top1, ec), _spearman(top1, shape_bias)
    above_ceiling = {d: int((real["error_consistency_mean"].sel(dataset=d) > ceiling[d].min()).sum()) for d in datasets}
    return (
        f"Across the {len(top1)} models, Spearman ρ between top-1 and shape bias is {sb_rho['r']:.2f}; the models' "
        f"shape bias reaches at most {shape_bias.max():.2f}, against {sb_people.min():.2f}–{sb_people.max():.2f} for "
        "people. Error consistency with people does not move the same way on every data set: "
        + ", ".join(f"ρ = {v['r']:.2f} on {d} (16-class accuracy: ρ = {acc_rho[d]:.2f})" for d, v in by_dataset.items())
        + f"; the mean over the three data sets gives ρ = {overall['r']:.2f}. On average the models' κ is "
        + ", ".join(f"{float(real['error_consistency_mean'].sel(dataset=d).mean()):.2f} against people's "
                    f"{ceiling[d].mean():.2f} on {d}" for d in ceiling.columns)
        + "; models above the lowest human observer: "
        + ", ".join(f"{n} of {len(top1)} on {d}" for d, n in above_ceiling.items()) + ".")


def strip_figure(obs: xr.Dataset) -> Figure:
    """Error consistency and 16-class accuracy per dataset: people, models and random-init models side by side."""
    long = obs[["error_consistency_mean", "accuracy"]].to_dataframe().reset_index()
    long["who"] = np.select([long["kind"] == "human", long["weights"] == "random"], ["human", "random init"], "model")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    sns.stripplot(data=long, x="dataset", y="error_consistency_mean", hue="who", dodge=True, ax=axes[0], size=6,
                  hue_order=["human", "model", "random init"])
    axes[0].set(xlabel="model-vs-human dataset", ylabel="mean κ with human observers",
                title="Error consistency: people vs models")
    axes[0].axhline(0, color="0.3", linewidth=0.8)
    ceiling = long[long["who"] == "human"].groupby("dataset", sort=False)["error_consistency_mean"].mean()
    order = [t.get_text() for t in axes[0].get_xticklabels()]
    axes[0].hlines(ceiling.reindex(order), np.arange(len(order)) - 0.4, np.arange(len(order)) + 0.4, color="0.2",
                   linewidth=1.5, label="human–human κ (mean over observers)")
    axes[0].legend(loc="best", fontsize="small")
    sns.stripplot(data=long, x="dataset", y="accuracy", hue="who", dodge=True, ax=axes[1], size=6,
                  hue_order=["human", "model", "random init"], legend=False)
    axes[1].set(xlabel="model-vs-human dataset", ylabel="16-class accuracy (fraction)",
                title="Accuracy on the same trials")
    axes[1].axhline(1 / 16, color="0.3", linewidth=0.8, linestyle=":")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- CIFAR-10H

def _compute_cifar(P: Mapping[str, Any]) -> xr.Dataset:
    rows = []
    for name in tqdm(P["cifar_models"], desc="CIFAR-10 models", unit="model"):
        model = zoo.load(name)
        scores = observers.cifar10h_alignment(model, n_images=P["n_cifar"], seed=P["seed"], device=P["device"])
        rows.append(dict(model=name, **scores,
                         published_accuracy=np.nan if model.meta.top1 is None else model.meta.top1))
    frame = pd.DataFrame(rows).set_index("model")
    ds = xr.Dataset.from_dataframe(frame.drop(columns=["published_accuracy", "n"])).assign_coords(
        published_accuracy=("model", frame["published_accuracy"].to_numpy(float)), n=("model", frame["n"].to_numpy()))
    ds["published_accuracy"].attrs["long_name"] = "published CIFAR-10 test accuracy (%), lossless images"
    ds.attrs["images_source"] = data.cifar10("test").attrs["source"]
    return ds


def load_cifar(P: Mapping[str, Any], profile: str) -> xr.Dataset:
    """Each CIFAR-10 model's distance to the CIFAR-10H label distributions, stored or computed."""
    key = results.content_key("human_alignment_cifar10h-v2", {k: P[k] for k in ("cifar_models", "n_cifar", "seed")},
                              results.file_digest(registry.fetch("cifar10h/cifar10h-probs.npy")),
                              observers, metrics, zoo)
    return store.load_or_compute(claims.result_name(CLAIM, "cifar10h", profile), key, lambda: _compute_cifar(P),
                                   profile=profile, parameters=P, tolerance={"rtol": 1e-4, "atol": 1e-6})


def cifar_table(cifar: xr.Dataset) -> pd.DataFrame:
    """The CIFAR-10H scores, one column per model."""
    table = cifar.to_dataframe()[list(CIFAR_ROWS)]
    return (table.rename(columns=CIFAR_ROWS, index=lambda m: m.removeprefix("cifar10_"))
            .round(4).T.rename_axis(f"{int(cifar['n'].max())} test images"))


def cifar_figure(cifar: xr.Dataset) -> Figure:
    """KL to the human label distribution and the entropy correlation against CIFAR-10 accuracy."""
    cf = cifar.to_dataframe()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    plots.scatter_fit(axes[0], 100 * cf["accuracy"], cf["kl"], point_labels=list(cf.index), xlabel=_CIFAR_ACC,
                      ylabel="KL(humans ‖ model) (nats; raw, calibration included)",
                      title="Raw KL to the human label distribution")
    plots.scatter_fit(axes[1], 100 * cf["accuracy"], cf["entropy_spearman"], point_labels=list(cf.index),
                      xlabel=_CIFAR_ACC, ylabel="Spearman ρ of per-image entropies",
                      title="Uncertain where people are uncertain?")
    fig.suptitle(f"{len(cf)} pretrained CIFAR-10 ResNets, {int(cf['n'].max()):,} test images each; lines: least-squares "
                 "fits (description, not a test)", y=1.02)
    fig.tight_layout()
    return fig


def images_text(cifar: xr.Dataset) -> str:
    """Which CIFAR-10 test images `load_cifar` scored, from the stored file."""
    n = int(cifar["n"].max())
    if store.parameters_of(cifar).get("n_cifar") is None:
        return f"all {n:,} CIFAR-10 test images"
    return f"a seeded random sample of {n:,} CIFAR-10 test images"


def inverted_u_images(profile: str) -> int:
    """How many of the first CIFAR-10 test images the inverted-U page scores the same ResNets on: its stored file's
    n, or its profile's setting before that page has run (it runs after this one)."""
    try:
        return int(store.load(claims.result_name("inverted_u", "cifar", profile)).attrs["n_eval"])
    except TradeoffsError:
        inverted_u = importlib.import_module("tradeoffs.chapters.inverted_u")  # not at the top: it imports this module
        return int(inverted_u.PROFILES[profile]["n_eval"])


def cifar_text(cifar: xr.Dataset, n_inverted_u: int) -> str:
    """Which CIFAR-10 images were read and why, how the inverted-U page's scores of the same models differ, why raw
    KL is not the row judged, and why the accuracies are lower than the published ones."""
    published = cifar["published_accuracy"].to_pandas().dropna()
    kl, scaled = cifar["kl"].to_pandas(), cifar["kl_calibrated"].to_pandas()
    every = store.parameters_of(cifar).get("n_cifar") is None
    return (f"The CIFAR-10 numbers on this page come from {images_text(cifar)}"
            + (": this page compares the pretrained models only with each other, so it reads every image with "
               "CIFAR-10H labels. " if every else " (this profile's setting). ")
            + f"The inverted-U page scores the same ResNets on the first {n_inverted_u:,} test images only, the "
            "images its early-stopping checkpoints are scored on, so its accuracies and KLs differ from these. "
            "Raw KL is dominated by each model's softmax temperature (its calibration, not where it hesitates): "
            f"temperature scaling alone lowers it from {kl.min():.2f}–{kl.max():.2f} to "
            f"{scaled.min():.2f}–{scaled.max():.2f} nats, so the row judged (`cifar10h`) uses the temperature-scaled "
            "KL. "
            f"The CIFAR-10 test images read here are the offline data root's copy: *{cifar.attrs['images_source']}*. "
            f"Test accuracies are therefore lower than the published ones "
            f"({', '.join(f'{a:.1f}%' for a in published)} on the lossless originals); the human "
            f"labels were collected on the originals.")


def load_checkpoints(profile: str) -> xr.Dataset | None:
    """The early-stopping chapter's stored checkpoint scores, or None when they are not stored."""
    try:
        return store.load(claims.result_name("early_stopping", "", profile))
    except TradeoffsError:
        return None


def _checkpoint_frame(checkpoints: xr.Dataset) -> pd.DataFrame:
    ck = checkpoints[["accuracy", "kl"]].to_dataframe().reset_index()
    return ck.dropna(subset=["accuracy", "kl"])


def checkpoint_figure(checkpoints: xr.Dataset, cifar: xr.Dataset) -> Figure:
    """KL against accuracy along each training run, with the pretrained models as stars."""
    ck, cf = _checkpoint_frame(checkpoints), cifar.to_dataframe()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=ck.assign(accuracy=100 * ck["accuracy"]), x="accuracy", y="kl", hue="model", units="seed",
                 estimator=None, sort=False, marker="o", ax=ax,
                 palette={m: plots.model_color(m) for m in ck["model"].unique()})  # each line follows one run's epochs
    ax.scatter(100 * cf["accuracy"], cf["kl"], marker="*", s=120, color="0.2", zorder=3,
               label=f"pretrained ({int(cf['n'].iloc[0]):,} images)")
    plots.chance_line(ax, 10, "chance accuracy (10%)", axis="x")  # the random initialisations (epoch 0) sit near it
    ax.set(xlabel=_CIFAR_ACC, ylabel="raw KL(humans ‖ model) (nats, calibration included; log scale)",
           yscale="log",
           title=f"Checkpoints along training ({int(checkpoints.attrs['n_eval']):,} test images each)")
    ax.legend(loc="upper right")
    return fig


def checkpoint_text(checkpoints: xr.Dataset) -> str:
    """Spearman ρ between accuracy and KL over each model's checkpoints."""
    ck_rho = {m: _spearman(g["accuracy"], g["kl"])["r"] for m, g in _checkpoint_frame(checkpoints).groupby("model")}
    return ("Within training, Spearman ρ between test accuracy and raw KL (calibration included, as in the figure) "
            "over all checkpoints and seeds: "
            + ", ".join(f"{v:.2f} for {m}" for m, v in ck_rho.items())
            + " (checkpoints of one run are not independent, so no interval is given).")


# ---------------------------------------------------------------- harmonization re-analysis and ClickMe

def _compute_harmonization(seed: int) -> xr.Dataset:
    table = data.table("serre_lab/onevision_model_type_reference").dropna(subset=["imgnet_acc", "imgnet_alignment"])
    x, y = table["imgnet_acc"].to_numpy(float), table["imgnet_alignment"].to_numpy(float)
    fit = stats.quadratic_fit(x, y, seed=seed)
    sides = stats.correlation_beyond(x, y, fit["vertex_x"], method="spearman")
    sides.loc["all"] = pd.Series(stats.correlation(x, y, method="spearman"))
    sides = sides[["r", "ci_low", "ci_high", "p", "n"]].astype(float)
    ds = xr.Dataset({"imgnet_acc": ("model", x), "imgnet_alignment": ("model", y)},
                    coords={"model": table["model"].to_numpy(str),
                            "model_type": ("model", table["model_type"].to_numpy(str))})
    for col in sides.columns:
        ds[f"spearman_{col}"] = ("side", sides[col].to_numpy())
    ds = ds.assign_coords(side=list(sides.index))
    for key in ("a", "b", "c", "vertex_x", "p_quadratic", "r2", "concave_fraction"):
        ds[f"quadratic_{key}"] = float(fit[key])
    ds["quadratic_vertex_ci_low"], ds["quadratic_vertex_ci_high"] = map(float, fit["vertex_ci"])
    return ds


def load_harmonization(P: Mapping[str, Any], profile: str) -> xr.Dataset:
    """The serre-lab ClickMe table with its quadratic fit and the correlations on each side of the vertex."""
    key = results.content_key("human_alignment_harmonization-v1", P["seed"],
                              results.file_digest(registry.fetch(_SERRE)), stats)
    return store.load_or_compute(claims.result_name(CLAIM, "harmonization", profile), key,
                                   lambda: _compute_harmonization(P["seed"]), profile=profile, parameters=P,
                                   tolerance={"rtol": 1e-6, "atol": 1e-9})


def _vertex(harm: xr.Dataset) -> tuple[float, tuple[float, float]]:
    return (float(harm["quadratic_vertex_x"]),
            (float(harm["quadratic_vertex_ci_low"]), float(harm["quadratic_vertex_ci_high"])))


def harmonization_figure(harm: xr.Dataset) -> Figure:
    """The serre-lab table: alignment against top-1 by model type, the quadratic fit and its vertex with its CI."""
    vertex, vertex_ci = _vertex(harm)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axvspan(*vertex_ci, color="0.85", label="vertex 95% CI", zorder=0)
    types = [_MODEL_TYPES.get(t, t) for t in harm["model_type"].values]
    plots.scatter_fit(ax, harm["imgnet_acc"].values, harm["imgnet_alignment"].values, hue=types,
                      fit="quadratic", xlabel="ImageNet top-1 (%)", ylabel="ClickMe alignment (ceiling-normalised ρ)",
                      title=f"serre-lab table: {harm.sizes['model']} timm models")
    ax.axvline(vertex, color="0.3", linestyle="--", linewidth=1, label=f"vertex {vertex:.1f}%")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def harmonization_text(harm: xr.Dataset) -> str:
    """What the serre-lab table is, what its alignment score is, and the shape of its relation with top-1."""
    vertex, vertex_ci = _vertex(harm)
    x, y = harm["imgnet_acc"].to_numpy(), harm["imgnet_alignment"].to_numpy()
    h_all, h_below = harm.sel(side="all"), harm.sel(side="below")
    n, n_below = int(h_all.spearman_n), int(h_below.spearman_n)
    return (
        f"This re-analyses the claimants' own measurements (serre-lab's table), so it is not an independent test. "
        f"Over all {n} models Spearman ρ = {float(h_all.spearman_r):.3f}: the check noted with the table "
        "(`tables/SOURCES.md` §2), recomputed from the same table, so matching it shows that the table is read "
        f"correctly, not that the claim holds. The quadratic's x² term is negative in "
        f"{100 * float(harm['quadratic_concave_fraction']):.0f}% of bootstrap fits, but its vertex lies at "
        f"{vertex:.1f}% top-1 (95% CI {vertex_ci[0]:.1f}–{vertex_ci[1]:.1f}%), near the low end of the models' "
        f"{x.min():.1f}–{x.max():.1f}%: only {n_below} of the {n} models lie below it, and among them ρ = "
        f"{float(h_below.spearman_r):.2f} (95% CI {float(h_below.spearman_ci_low):.2f} to "
        f"{float(h_below.spearman_ci_high):.2f}). "
        + ("Over the observed range the relation is a decline, not a rise and then a fall. " if n_below < 0.1 * n
           else "")
        + "The alignment axis is serre-lab's score: for each ImageNet ClickMe image, the Spearman ρ between "
        "the model's saliency map and the human click map divided by that image's split-half human ceiling, averaged "
        "over images; because each image is normalised by its own ceiling, a model can score above 1 (or below 0) "
        f"(`tables/SOURCES.md` §2). {int((y > 1).sum())} of the {n} models average above 1 (up to {y.max():.2f}); "
        "the table's documentation gives no further reason.")


def _compute_clickme(P: Mapping[str, Any]) -> xr.Dataset:
    val = clickme.val(P["n_clickme"])
    rows = []
    for spec in tqdm([s for s in _observer_specs(P) if s["weights"] == "pretrained"], desc="ClickMe", unit="model"):
        model = _load_model(spec, P["seed"])
        if getattr(model.module, "cpu_only", False):
            continue  # TFLite graphs give no input gradients
        scores = clickme.alignment(model, val["images"].values, val["labels"].values, val["heatmaps"].values,
                                   device=P["device"])
        rows.append(dict(model=spec["observer"], alignment=np.nanmean(scores),
                         sem=np.nanstd(scores, ddof=1) / np.sqrt(np.isfinite(scores).sum()),
                         top1=model.meta.top1, n=int(np.isfinite(scores).sum())))
    if not rows:
        raise TradeoffsError("no differentiable model to score on ClickMe (TFLite graphs have no input gradients); "
                             "add timm models with the timm_models parameter.")
    frame = pd.DataFrame(rows).set_index("model")
    return xr.Dataset.from_dataframe(frame.drop(columns=["top1", "n"])).assign_coords(
        top1=("model", frame["top1"].to_numpy(float)), n=("model", frame["n"].to_numpy()))


def load_clickme(P: Mapping[str, Any], profile: str) -> xr.Dataset | None:
    """ClickMe alignment of the differentiable models, stored or computed; None when the profile scores none."""
    if not P["n_clickme"]:
        return None
    key = results.content_key("human_alignment_clickme-v2", {k: P[k] for k in ("models", "timm_models", "n_clickme")},
                              clickme, metrics, importlib.import_module(__name__))
    return store.load_or_compute(claims.result_name(CLAIM, "clickme", profile), key, lambda: _compute_clickme(P),
                                   profile=profile, parameters=P, tolerance={"rtol": 1e-3, "atol": 1e-4})


# ---------------------------------------------------------------- statistics and verdict

def statistics(obs: xr.Dataset, cifar: xr.Dataset, harm: xr.Dataset, clickme: xr.Dataset | None) -> pd.DataFrame:
    """Every Spearman ρ of the page with its CI, p and n, and the serre-lab vertex (labelled) with its CI."""
    _, real, _ = _groups(obs)
    top1, shape_bias, ec = _model_scores(real)
    cf = cifar.to_dataframe()
    rows = {"ImageNet top-1 vs error consistency with humans (mean of 3 datasets)": _spearman(top1, ec),
            "ImageNet top-1 vs shape bias": _spearman(top1, shape_bias)}
    for d in real["dataset"].values:
        ec_d = real["error_consistency_mean"].sel(dataset=d)
        rows[f"ImageNet top-1 vs error consistency, {d}"] = _spearman(top1, ec_d)
        rows[f"ImageNet top-1 vs 16-class accuracy, {d}"] = _spearman(top1, real["accuracy"].sel(dataset=d))
    for m in ("kl", "kl_calibrated", "cross_entropy", "top1_agreement", "entropy_spearman"):
        rows[f"CIFAR-10 accuracy vs {CIFAR_ROWS[m]}"] = _spearman(cf["accuracy"], cf[m])
    for side in ("below", "above", "all"):
        h = harm.sel(side=side)
        rows[f"harmonization table: top-1 vs alignment, {side} the vertex" if side != "all" else
             "harmonization table: top-1 vs alignment, all models"] = {
            k: float(h[f"spearman_{k}"]) for k in ("r", "ci_low", "ci_high", "p", "n")}
    if clickme is not None:
        rows["ClickMe: top-1 vs alignment"] = _spearman(clickme["top1"], clickme["alignment"])
    table = pd.DataFrame(rows).T.rename(columns={"r": "estimate"})
    vertex, vertex_ci = _vertex(harm)
    table.loc["harmonization table: quadratic vertex (top-1 %)"] = [vertex, *vertex_ci, np.nan, harm.sizes["model"]]
    table["n"] = table["n"].astype(int)
    return table  # every row is a Spearman ρ but the vertex (labelled)


def _split(harm: xr.Dataset, seed: int) -> dict:
    return stats.beyond_optimum_split(harm["imgnet_acc"].values, harm["imgnet_alignment"].values, seed=seed)


def _per_dataset(real: xr.Dataset) -> dict[str, dict]:
    top1 = real["top1"].to_pandas()
    return {d: _spearman(top1, real["error_consistency_mean"].sel(dataset=d)) for d in real["dataset"].values}


def _spread(per_dataset: Mapping[str, dict]) -> dict:
    return stats.heterogeneity([r["r"] for r in per_dataset.values()], [r["n"] for r in per_dataset.values()])


def _enough(result: Mapping[str, Any]) -> dict[str, float]:
    return {"enough_n": result["n"]}  # the gate reads the number of points


def measured(obs: xr.Dataset, cifar: xr.Dataset, harm: xr.Dataset, clickme: xr.Dataset | None,
             seed: int) -> dict[str, verdicts.Measured]:
    """What was measured for each declared test of the claim, for `verdicts.record`."""
    _, real, _ = _groups(obs)
    top1, shape_bias, ec = _model_scores(real)
    cf = cifar.to_dataframe()
    split, per_dataset = _split(harm, seed), _per_dataset(real)
    pooled, sb, kl = _spearman(top1, ec), _spearman(top1, shape_bias), _spearman(cf["accuracy"], cf["kl_calibrated"])
    result = {
        "serre_table": verdicts.Measured.of(split, _enough(split)),
        "ec_pooled": verdicts.Measured.of(pooled, {**_enough(pooled), "homogeneous": _spread(per_dataset)["I2"]}),
        **{f"ec_{d.replace('-', '_')}": verdicts.Measured.of(r, _enough(r)) for d, r in per_dataset.items()},
        "shape_bias": verdicts.Measured.of(sb, _enough(sb)),
        "cifar10h": verdicts.Measured.of(kl, _enough(kl)),
    }
    if clickme is not None:
        here = _spearman(clickme["top1"], clickme["alignment"])
        result["clickme_here"] = verdicts.Measured.of(here, _enough(here))
    return result


def verdict_text(trials: xr.Dataset, obs: xr.Dataset, cifar: xr.Dataset, harm: xr.Dataset, seed: int) -> str:
    """The primary test's split, the spread of the error-consistency rows, the CIFAR-10H row and the run time."""
    split, spread = _split(harm, seed), _spread(_per_dataset(_groups(obs)[1]))
    return (
        "The primary test re-analyses the claimants' serre-lab table (not an independent test): it fits the optimum "
        f"on one random half of the models ({split['optimum']:.1f}% top-1) and correlates the other half's "
        f"{split['n']} models beyond it. "
        f"Error consistency across the three data sets: I² = {spread['I2']:.2f} (Cochran's Q = {spread['Q']:.1f}, "
        "treating them as independent although they share the models)"
        + ("; they disagree, so the pooled row is not judged and each data set is reported on its own. "
           if spread["I2"] > 0.5 else ". ")
        + f"The CIFAR-10H row has {cifar.sizes['model']} models, fewer than its gate needs. "
        + chapters.elapsed_text({"model decisions": trials, "observers": obs, "CIFAR-10H": cifar,
                                 "harmonization": harm})
        + " A recomputation that finds the models' logits in the features cache takes a small fraction of that.")



def outlook_text(obs: xr.Dataset, harm: xr.Dataset, cifar: xr.Dataset) -> str:
    """What would change the verdict: the range our models span against the serre-lab vertex, and the full profile."""
    top1 = _groups(obs)[1]["top1"].to_pandas()
    vertex = float(harm["quadratic_vertex_x"])
    families = zoo.available().set_index("name")["family"].reindex(top1.index).dropna().nunique()
    fel = data.table("published/fel2022_numbers_read").set_index("quantity")["value"]
    return (
        f"The {len(top1)} offline mobile ImageNet networks scored here span {top1.min():.1f}–{top1.max():.1f}% "
        f"published top-1 and come from {families} families; the serre-lab table's fitted vertex lies at {vertex:.1f}% "
        f"top-1, with {int(harm['spearman_n'].sel(side='below'))} of its {harm.sizes['model']} models below it "
        f"(models of ours above it: {int((top1 > vertex).sum())}). The `full` profile would add {len(TIMM_ZOO)} "
        "timm models up to ViT, Swin and ConvNeXt (its `timm_models` parameter), score them on the same human trials, "
        "and run the paper's own measure on ClickMe maps; a negative correlation there, above the vertex, would "
        f"support the claim where this page cannot. {chapters.full_run_text(CLAIM, 'observers')} For CIFAR-10H, {cifar.sizes['model']} "
        "pretrained networks are too few for a decisive interval; the checkpoints of the early-stopping chapter give many more accuracy levels, but within a few "
        "training runs, so they are shown and not counted as independent models. Fel et al.'s own evidence that the "
        "trade-off is not inevitable, the neural harmonizer (a training routine that in their words both aligns "
        "models with human strategies and improves accuracy; "
        f"{int(fel['n_harmonized_models_released'])} harmonized models released), is cited, not tested here.")
