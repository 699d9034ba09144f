"""Dataset correlation: does ImageNet top-1 predict accuracy on other data sets?

Correlations across networks between ImageNet top-1 and accuracy elsewhere, each with its 95% CI, from three
sources: timm's published results of its model zoo on five shifted ImageNet test sets (probit axes, with a
two-piece fit of where the linear trend bends), linear probes of offline ImageNet models on CIFAR-10 and
Fashion-MNIST computed here, and the Transfer-Learning-Library's published fine-tuning table (plus fine-tuning
computed here in the `full` profile). The verdict reads the declared tests of `tradeoffs.claims`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import xarray as xr
from matplotlib.figure import Figure
from scipy.stats import norm

from .. import chapters, claims, data, plots, probes, registry, results, stats, store, verdicts
from .. import models as zoo_models

CLAIM = "dataset_correlation"
OFFLINE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v1_0.25_128_quant",
           "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant", "mobilenet_v1_1.0_224_quant",
           "mobilenet_v2_1.0_224_quant", "mobilenet_v3_small_224_uint8", "mobilenet_edgetpu_0.75_224_ptq",
           "mobilenet_edgetpu_1.0_224_uint8"]
ZOO = ["resnet18.tv_in1k", "resnet34.tv_in1k", "resnet50.tv_in1k", "resnet101.tv_in1k", "resnet152.tv_in1k",
       "densenet121.tv_in1k", "densenet169.tv_in1k", "densenet201.tv_in1k", "inception_v3.tv_in1k",
       "inception_v4.tf_in1k", "inception_resnet_v2.tf_in1k", "vgg16.tv_in1k", "mobilenetv2_100.ra_in1k",
       "mnasnet_100.rmsp_in1k", "efficientnet_b0.ra_in1k", "nasnetalarge.tf_in1k", "pnasnet5large.tf_in1k",
       "vit_small_patch16_224.augreg_in1k"]
_PROBE_DATA = dict(datasets=["CIFAR-10", "Fashion-MNIST"], Cs=[float(c) for c in (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100)])
PROFILES = {
    "smoke": dict(models=["mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant",
                          "mobilenet_v3_small_224_uint8"],
                  baselines=["mobilenetv3_small_050"], n_train=50, n_val=20, n_test=50,
                  finetune=False, finetune_models=[], epochs=0, **_PROBE_DATA),
    "default": dict(models=OFFLINE, baselines=["efficientnet_lite0", "mobilenetv3_small_100"],
                    n_train=1000, n_val=250, n_test=1000, finetune=False, finetune_models=[], epochs=0, **_PROBE_DATA),
    "full": dict(models=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", *ZOO],
                 baselines=["efficientnet_lite0", "resnet50"], n_train=10000, n_val=2000, n_test=10000,
                 finetune=True, finetune_models=ZOO, epochs=3, **_PROBE_DATA),
}
_TABLES = ["imagenet", *probes.OOD_TABLES.values(), *probes.CLEAN_200.values()]
_PROBE_KEYS = ("models", "baselines", "n_train", "n_val", "n_test", "datasets", "Cs", "seed")
_FAMILY = {"efficientnet_lite": "EfficientNet-Lite", "mobilenet": "MobileNet (TFLite)"}
_PARTS = {"zoo": "timm zoo: ImageNet variants under distribution shift (not other data sets)",
          "linear probe": "linear probes (computed here)"}
_PCT = np.array([0.1, 1, 5, 10, 20, 40, 60, 80, 90, 95, 98])  # tick labels (%) far enough apart on probit axes
_COLUMNS = ["part", "dataset", "x", "scale", "subset", "method", "r", "ci_low", "ci_high", "p", "n"]


def settings(profile: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's settings, overridden by the notebook parameters that are not None."""
    return chapters.settings(PROFILES, profile, given)


def _corr_rows(xs, ys, /, *, dropna: bool = False, **labels) -> list[dict]:
    """Pearson and Spearman of (xs, ys) as rows labelled by `labels` (`dropna`: see `stats.correlation`)."""
    return [{**labels, "method": m, **stats.correlation(xs, ys, m, dropna=dropna)} for m in ("pearson", "spearman")]


def _pearson_row(xs, ys, **labels) -> dict:
    return {**labels, "method": "pearson", **stats.correlation(xs, ys)}


# ---------------------------------------------------------------- 1. timm's zoo on shifted ImageNet test sets

def load_zoo(profile: str) -> xr.Dataset:
    """timm's zoo joined with its shifted test sets (`probes.timm_zoo`), stored or computed."""
    key = results.content_key("zoo-v1", [registry.fetch(f"tables/timm/results-{t}.csv") for t in _TABLES], probes)
    return store.load_or_compute(claims.result_name(CLAIM, "zoo", profile), key, probes.timm_zoo, profile=profile,
                                   parameters={"tables": _TABLES}, tolerance={"rtol": 1e-9, "atol": 1e-9})


def _zoo_frame(zoo: xr.Dataset) -> pd.DataFrame:
    return zoo.to_dataframe().reset_index().dropna(subset=["accuracy"])


def zoo_counts(zoo: xr.Dataset) -> str:
    """How many models, and how many per shifted test set."""
    return f"{zoo.sizes['model']} models; per data set: {_zoo_frame(zoo).groupby('dataset').size().to_dict()}"


def _trend_break_row(d: str, sub: pd.DataFrame) -> dict:
    px, py = probes.probit(sub.top1), probes.probit(sub.accuracy)
    tb = probes.trend_break(px, py, quantile=0.9)
    top = px > tb["threshold"]
    r_top, r_rest = stats.correlation(px[top], py[top]), stats.correlation(px[~top], py[~top])
    return {"dataset": d, "break at top-1 (%)": 100 * float(norm.cdf(tb["threshold"])),
            "slope below (probit)": tb["slope"], "slope change above": tb["slope_change"], "ci_low": tb["ci_low"],
            "ci_high": tb["ci_high"], "r top decile": r_top["r"], "r rest": r_rest["r"],
            "n top decile": tb["n_above"], "n": tb["n"]}


def zoo_statistics(zoo: xr.Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The zoo's correlations (accuracy and probit axes, per pretraining group) and trend breaks per test set."""
    df, rows, breaks = _zoo_frame(zoo), [], []
    for d in probes.OOD_TABLES:
        sub = df[df.dataset == d]
        px, py = probes.probit(sub.top1), probes.probit(sub.accuracy)
        labels = dict(part="zoo", dataset=d, scale="probit", x="ImageNet top-1")
        rows += _corr_rows(sub.top1, sub.accuracy, **{**labels, "scale": "accuracy (%)"}, subset="all")
        rows.append(_pearson_row(px, py, **labels, subset="all"))
        if d in probes.CLEAN_200:
            rows.append(_pearson_row(probes.probit(sub.reference_top1), py,
                                     **{**labels, "x": "ImageNet top-1, same 200 classes"}, subset="all"))
        for group, g in sub.groupby("pretraining"):
            rows.append(_pearson_row(probes.probit(g.top1), probes.probit(g.accuracy), **labels, subset=group))
        breaks.append(_trend_break_row(d, sub))
    return pd.DataFrame(rows), pd.DataFrame(breaks).set_index("dataset")


def _probit_ticks(ax: plt.Axes) -> None:
    for (lo, hi), setter in ((ax.get_xlim(), ax.set_xticks), (ax.get_ylim(), ax.set_yticks)):
        ticks = _PCT[(probes.probit(_PCT) >= lo) & (probes.probit(_PCT) <= hi)]
        setter(probes.probit(ticks), [f"{t:g}" for t in ticks])


def zoo_figure(zoo: xr.Dataset, breaks: pd.DataFrame) -> Figure:
    """Shifted-set top-1 against ImageNet top-1 on probit axes with linear fits; residuals by top-1 bin."""
    df = _zoo_frame(zoo)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    palette = dict(zip(probes.OOD_TABLES, sns.color_palette(plots.PALETTE, len(probes.OOD_TABLES))))
    resid = []
    for d, c in palette.items():
        sub = df[df.dataset == d]
        px, py = probes.probit(sub.top1), probes.probit(sub.accuracy)
        ax.scatter(px, py, s=5, alpha=0.35, color=c, label=d, linewidth=0)
        slope, intercept = np.polyfit(px, py, 1)
        grid = np.linspace(px.min(), px.max(), 50)
        ax.plot(grid, intercept + slope * grid, color=c, linewidth=1.2)
        resid.append(pd.DataFrame({"dataset": d, "top1": sub.top1.to_numpy(), "residual": py - (intercept + slope * px),
                                   "bin": np.round(sub.top1.to_numpy() / 2) * 2}))
    _probit_ticks(ax)
    ax.set(xlabel="ImageNet top-1 (%, probit scale)", ylabel="top-1 on the shifted test set (%, probit scale)",
           title="timm zoo: ImageNet variants under distribution shift")
    ax.legend(markerscale=3, loc="lower right")
    sns.lineplot(pd.concat(resid), x="bin", y="residual", hue="dataset", palette=palette, errorbar=("ci", 95), seed=0,
                 ax=bx, legend=False)
    bx.axhline(0, color="0.3", linewidth=0.8)
    for d, c in palette.items():
        bx.axvline(breaks.loc[d, "break at top-1 (%)"], color=c, linestyle=":", linewidth=1)
    bx.set(xlabel="ImageNet top-1 (%), 2-point bins", ylabel="residual from the probit fit (probit units)",
           title="Where the linear trend bends (dotted: 90th percentile)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 2. linear probes computed here

def _family(name: str) -> str:
    return next((f for prefix, f in _FAMILY.items() if name.startswith(prefix)), "timm zoo")


def _compute_probes(P: Mapping[str, Any]) -> xr.Dataset:
    seed = P["seed"]
    splits = {d: probes.transfer_splits(d, P["n_train"], P["n_val"], P["n_test"], seed) for d in P["datasets"]}
    runs = [(m, "pretrained") for m in P["models"]] + [(m, "random") for m in P["baselines"]]
    acc = np.full((len(runs), len(P["datasets"])), np.nan)
    chosen, dims = acc.copy(), []
    val = np.full((*acc.shape, len(P["Cs"])), np.nan)
    labels, top1, fams, sources = [], [], [], []
    for i, (name, weights) in enumerate(runs):
        torch.manual_seed(seed)
        model = zoo_models.load(name, weights=weights)
        labels.append(name if weights == "pretrained" else f"{name} (random init)")
        top1.append(np.nan if model.meta.top1 is None else model.meta.top1)
        fams.append(_family(name) if weights == "pretrained" else "random init")
        sources.append(model.meta.source)
        for j, d in enumerate(P["datasets"]):
            fit, dim = probes.linear_probe(model, splits[d], Cs=P["Cs"], device=P["device"])
            acc[i, j], chosen[i, j], val[i, j] = fit.accuracy, fit.C, fit.val_accuracy
        dims.append(dim)
    return xr.Dataset(
        {"accuracy": (("model", "dataset"), acc, {"units": "%", "long_name": "linear-probe test accuracy"}),
         "C": (("model", "dataset"), chosen, {"long_name": "inverse L2 strength chosen on validation"}),
         "val_accuracy": (("model", "dataset", "C_grid"), val, {"units": "%"})},
        coords={"model": labels, "dataset": P["datasets"], "C_grid": P["Cs"], "top1": ("model", top1),
                "family": ("model", fams), "weights": ("model", [w for _, w in runs]),
                "feature_dim": ("model", dims), "source": ("model", sources)},
        attrs={"n_train": P["n_train"], "n_val": P["n_val"], "n_test": P["n_test"]})


def load_probes(P: Mapping[str, Any], profile: str) -> xr.Dataset:
    """Linear-probe accuracies of the profile's models and random-init baselines, stored or computed."""
    key = results.content_key("probes-v1", {k: P[k] for k in _PROBE_KEYS}, probes)
    return store.load_or_compute(claims.result_name(CLAIM, "probes", profile), key, lambda: _compute_probes(P),
                                   profile=profile, parameters=P, tolerance={"rtol": 1e-6, "atol": 1e-6})


def probe_table(pr: xr.Dataset) -> pd.DataFrame:
    """Probe accuracy per model and data set, with published top-1, the model catalogue's family (as on the other
    pages) and the kind of network the plots colour by (float EfficientNet-Lite or 8-bit TFLite MobileNet)."""
    family = [_catalogue()["family"].get(m, "random init" if w == "random" else "") for m, w in
              zip(pr.model.values, pr.weights.values)]
    top1 = np.round(pr.top1.values, 1).astype(object)
    top1[np.isnan(pr.top1.values)] = "—"  # networks with random weights have no ImageNet top-1
    return pr.accuracy.to_pandas().round(1).assign(**{"ImageNet top-1": top1, "family": family,
                                                      "kind": pr.family.values})


def _trained(pr: xr.Dataset) -> xr.Dataset:
    return pr.where(pr.weights == "pretrained", drop=True)


def probe_statistics(pr: xr.Dataset) -> pd.DataFrame:
    """Per data set: Pearson and Spearman on accuracy axes, Pearson on logit axes (pretrained models only)."""
    trained, rows = _trained(pr), []
    for d in pr.dataset.values:
        x, y = trained.top1.values, trained.accuracy.sel(dataset=d).values
        labels = dict(part="linear probe", dataset=d, scale="accuracy (%)", x="ImageNet top-1", subset="pretrained")
        rows += _corr_rows(x, y, **labels)
        rows.append(_pearson_row(probes.logit(x), probes.logit(y), **{**labels, "scale": "logit"}))
    return pd.DataFrame(rows)


@cache
def _catalogue() -> pd.DataFrame:
    return zoo_models.available().set_index("name")


def _float_placed(names) -> list[str]:
    """Quantised models whose published top-1 is their float model's (the catalogue's source says so)."""
    catalogue = _catalogue()
    return [m for m in names if m in catalogue.index and "float model" in catalogue.loc[m, "source"]]


def probed_models_text(pr: xr.Dataset) -> str:
    """What the probed ImageNet models are (from the model catalogue), and where a top-1 is not the model's own."""
    trained, catalogue = _trained(pr), _catalogue()
    names = [m for m in trained.model.values if m in catalogue.index]
    if not names:
        return ""
    rows = catalogue.loc[names]
    tflite = sum(".tflite" in str(trained.source.sel(model=m).item()) for m in names)
    sides = [size[0] for size in rows.input_size]
    share = f"The {len(names)}" if len(names) == trained.sizes["model"] else f"{len(names)} of the"
    kinds = [f"{k} {kind}" for k, kind in ((len(names) - tflite, "EfficientNet-Lite (PyTorch weights)"),
                                           (tflite, "TFLite MobileNets quantised to 8 bits")) if k]
    text = (f"{share} probed ImageNet models are offline mobile networks: {' and '.join(kinds)}, with published "
            f"ImageNet top-1 from {rows.top1.min():.1f} to {rows.top1.max():.1f} % and inputs of {min(sides)} to "
            f"{max(sides)} px. They are small networks built for phones, not the larger state-of-the-art ImageNet "
            "networks the papers compared, so they test the claim only over the range of accuracy they span.")
    for m in _float_placed(names):
        text += (f" `{m}` is placed at its float model's published top-1 ({catalogue.loc[m, 'top1']:.1f} %; the "
                 "quantised model's own figure was not verified); it is ringed in the plots.")
    return text


def _noise(pr: xr.Dataset) -> dict[str, dict]:
    """Per data set: the binomial SD of one probe score at the stored n_test, and the spread across models."""
    n_test, trained = int(store.parameters_of(pr)["n_test"]), _trained(pr)
    return {d: stats.noise_ratio(trained.accuracy.sel(dataset=d).values / 100, n_test) for d in pr.dataset.values}


def probe_noise_text(pr: xr.Dataset) -> str:
    """n test images per probe score, the binomial SD of one score at that n, and the spread across models."""
    noise, n_test = _noise(pr), int(store.parameters_of(pr)["n_test"])
    sd, across = (" and ".join(f"{100 * v[k]:.1f} points on {d}" for d, v in noise.items())
                  for k in ("sampling", "across"))
    return (f"Each probe score is the accuracy on n = {n_test} test images of one data set. At that n, one score has "
            f"a binomial SD, √(a(1 − a)/n) at the models' accuracies, of {sd}; the SD of the scores across the "
            f"{_trained(pr).sizes['model']} models is {across}. Where the two are close, the ranking of the models "
            "by probe accuracy is mostly test-sample noise; the verdict's gate on their ratio is listed below.")


def _short(name: str) -> str:
    """A point label: the model name without family prefix and quantisation suffix."""
    for part in ("mobilenet_", "efficientnet_", "_quant", "_uint8", "_ptq", "_224"):
        name = name.replace(part, "")
    return name


def _chance(dataset: str) -> float:
    """Chance accuracy (%) of a probe data set: one over its number of classes."""
    return 100 / probes.TRANSFER_DATASETS[dataset]("test").sizes["class"]


def probe_figure(pr: xr.Dataset) -> Figure:
    """Probe accuracy against published top-1 per data set: random-init baselines and chance as horizontal lines,
    labels kept apart (`plots.label_points`), a ring on models placed at their float model's top-1."""
    trained, random_init = _trained(pr), pr.where(pr.weights == "random", drop=True)
    stored = store.parameters_of(pr)
    ringed = np.isin(trained.model.values, _float_placed(trained.model.values))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, d in zip(axes, pr.dataset.values):
        x, y = trained.top1.values, trained.accuracy.sel(dataset=d).values
        plots.scatter_fit(ax, x, y, hue=trained.family.values, xlabel="ImageNet top-1 (%, published)",
                          ylabel="linear-probe test accuracy (%)",
                          title=f"{d}: {stored['n_train']} train / {stored['n_test']} test images")
        if ringed.any():
            ax.scatter(x[ringed], y[ringed], s=110, facecolors="none", edgecolors="0.2", linewidth=1,
                       label="top-1 of its float model", zorder=4)
        for k, m in enumerate(random_init.model.values):
            ax.axhline(float(random_init.accuracy.sel(model=m, dataset=d)), color="0.5",
                       linestyle=["--", ":"][k % 2], linewidth=1, label=m)
        ax.axhline(_chance(d), color="0.2", linestyle="-.", linewidth=1, label="chance")
        ax.get_legend().remove()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3)  # one legend for both panels
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    for ax, d in zip(axes, pr.dataset.values):  # labels last, when the axes have their final size and limits
        plots.label_points(ax, trained.top1.values, trained.accuracy.sel(dataset=d).values,
                           [_short(m) for m in trained.model.values])
    return fig


# ---------------------------------------------------------------- 3. the Transfer-Learning-Library table

def load_tllib(profile: str) -> xr.Dataset:
    """The Transfer-Learning-Library fine-tuning table joined with ImageNet top-1 (`probes.tllib_finetune`)."""
    key = results.content_key("tllib-v1", registry.fetch("tables/tllib/model_selection_finetune.csv"),
                              registry.fetch("tables/timm/results-imagenet.csv"), probes)
    return store.load_or_compute(claims.result_name(CLAIM, "tllib", profile), key, probes.tllib_finetune,
                                   profile=profile, parameters={"table": "tllib/model_selection_finetune"},
                                   tolerance={"rtol": 1e-9, "atol": 1e-9})


def tllib_table(tl: xr.Dataset) -> pd.DataFrame:
    """The models' torchvision and timm names with each one's ImageNet top-1."""
    return tl[["torchvision_name", "top1", "timm_name", "top1_timm"]].to_dataframe()


def tllib_join_text(tl: xr.Dataset) -> str:
    """Which models timm re-evaluated, and how far its top-1 differs from torchvision's."""
    joined = [m for m in tl.model.values if tl.timm_name.sel(model=m).item()]
    missing = [m for m in tl.model.values if m not in joined]
    return (f"timm lists the same torchvision weights (`.tv_in1k`) for {len(joined)} of {tl.sizes['model']} "
            f"models ({', '.join(joined)}); not for {', '.join(missing)}. Their timm re-evaluation differs from "
            f"torchvision's published top-1 by at most "
            f"{np.nanmax(np.abs(tl.top1_timm.values - tl.top1.values)):.2f} points, so the correlations below use "
            f"torchvision's numbers for all {tl.sizes['model']} models and repeat them on timm's for the "
            f"{len(joined)} that joined.")


def _mean_log_odds(tl: xr.Dataset) -> np.ndarray:
    """Per model: the mean over data sets of the log-odds fine-tuned accuracy (the primary test's y axis)."""
    return probes.logit(tl.finetuned_acc.transpose("model", "dataset").values).mean(1)


_POOLED = "log-odds, mean over data sets"


def tllib_statistics(tl: xr.Dataset) -> pd.DataFrame:
    """The primary test's r (top-1 against the mean log-odds accuracy), then per data set: Pearson and Spearman on
    torchvision's top-1, Pearson on timm's for the models that joined."""
    ok = np.isfinite(tl.top1_timm.values)
    rows = [_pearson_row(tl.top1.values, _mean_log_odds(tl), part="fine-tuning (tllib)",
                         dataset=f"all {tl.sizes['dataset']}", scale=_POOLED, x="ImageNet top-1 (torchvision)",
                         subset="all")]
    for d in tl.dataset.values:
        y = tl.finetuned_acc.sel(dataset=d).values
        labels = dict(part="fine-tuning (tllib)", dataset=d, scale="accuracy (%)")
        rows += _corr_rows(tl.top1.values, y, **labels, x="ImageNet top-1 (torchvision)", subset="all")
        rows.append(_pearson_row(tl.top1_timm.values[ok], y[ok], **labels, x="ImageNet top-1 (timm)",
                                 subset="joined in timm"))
    return pd.DataFrame(rows)


def tllib_overall(tl: xr.Dataset, seed: int) -> dict[str, dict]:
    """`pooled`: one r of top-1 against the mean log-odds accuracy; `mean`: the mean of the per-data-set r's."""
    finetuned = tl.finetuned_acc.transpose("model", "dataset").values
    return {"pooled": stats.correlation(tl.top1.values, _mean_log_odds(tl)),
            "mean": stats.mean_correlation(tl.top1.values, finetuned, seed=seed)}  # bootstrap over models


def _pearson_by_dataset(tl_stats: pd.DataFrame) -> pd.DataFrame:
    per_set = (tl_stats.method == "pearson") & (tl_stats.subset == "all") & (tl_stats.scale != _POOLED)
    return tl_stats[per_set].set_index("dataset")


def tllib_figure(tl: xr.Dataset, tl_stats: pd.DataFrame) -> Figure:
    """The primary test first (top-1 against the mean log-odds fine-tuned accuracy), then fine-tuned accuracy
    against top-1, one panel per data set; each titled with its Pearson r and CI."""
    pearson = _pearson_by_dataset(tl_stats)
    pooled = tl_stats[tl_stats.scale == _POOLED].iloc[0]
    fig, axes = plt.subplots(3, 3, figsize=(11, 9.5), sharex=True)
    plots.scatter_fit(axes[0, 0], tl.top1.values, _mean_log_odds(tl),
                      title=f"primary test: mean over {tl.sizes['dataset']}\nr = {pooled.r:.2f} "
                            f"[{pooled.ci_low:.2f}, {pooled.ci_high:.2f}]")
    axes[0, 0].set_ylabel("mean log-odds of fine-tuned acc.")
    for ax, d in zip(axes.flat[1:], tl.dataset.values):
        r = pearson.loc[d]
        plots.scatter_fit(ax, tl.top1.values, tl.finetuned_acc.sel(dataset=d).values,
                          title=f"{d}\nr = {r.r:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]")
        ax.set_ylabel("fine-tuned acc. (%)" if ax in axes[1:, 0] else "")
    for ax in axes.flat:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in axes[2]:
        ax.set_xlabel("ImageNet top-1 (%)")
    fig.suptitle(f"Transfer-Learning-Library: {tl.sizes['model']} torchvision models fine-tuned on "
                 f"{tl.sizes['dataset']} data sets (line: OLS fit, band: 95%)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 4. fine-tuning computed here (full profile)

def _compute_finetune(P: Mapping[str, Any]) -> xr.Dataset:
    seed = P["seed"]
    splits = {d: probes.transfer_splits(d, P["n_train"], P["n_val"], P["n_test"], seed) for d in P["datasets"]}
    acc = np.full((len(P["finetune_models"]), len(P["datasets"])), np.nan)
    top1 = []
    for i, name in enumerate(P["finetune_models"]):
        model = zoo_models.load(name)
        top1.append(np.nan if model.meta.top1 is None else model.meta.top1)
        for j, d in enumerate(P["datasets"]):
            n_classes = len(np.unique(splits[d]["train"][1]))
            acc[i, j] = probes.finetune(model, splits[d]["train"], splits[d]["test"], num_classes=n_classes,
                                        epochs=P["epochs"], device=P["device"], seed=seed).accuracy
    attrs = {"units": "%", "long_name": "fine-tuned test accuracy"}
    return xr.Dataset({"accuracy": (("model", "dataset"), acc, attrs)},
                      coords={"model": P["finetune_models"], "dataset": P["datasets"], "top1": ("model", top1)})


def load_finetune(P: Mapping[str, Any], profile: str) -> xr.Dataset | None:
    """Fine-tuned accuracies of `finetune_models`, stored or computed; None when the profile does not fine-tune."""
    if not P["finetune"]:
        return None
    key = results.content_key("finetune-v1", {k: P[k] for k in ("finetune_models", "epochs", "n_train", "n_test",
                                                                "datasets", "seed")}, probes)
    return store.load_or_compute(claims.result_name(CLAIM, "finetune", profile), key, lambda: _compute_finetune(P),
                                   profile=profile, parameters=P, tolerance={"rtol": 0.02, "atol": 1.0})


def finetune_table(ft: xr.Dataset) -> pd.DataFrame:
    """Fine-tuned accuracy per model and data set, with top-1."""
    return ft.accuracy.to_pandas().assign(top1=ft.top1.values).round(1)


def skipped_text(profile: str) -> str:
    """What the page says when the profile does not fine-tune."""
    return f"profile {profile!r}: fine-tuning skipped (run the full profile on a GPU)"


def finetune_statistics(ft: xr.Dataset | None) -> pd.DataFrame:
    """Per data set: Pearson and Spearman of fine-tuned accuracy against top-1 (no rows without fine-tuning)."""
    rows = []
    for d in [] if ft is None else ft.dataset.values:
        rows += _corr_rows(ft.top1.values, ft.accuracy.sel(dataset=d).values, dropna=True,
                           part="fine-tuning (here)", dataset=d,
                           scale="accuracy (%)", x="ImageNet top-1", subset="pretrained")
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- statistics, verdict and the page's sentences

def _label(row: pd.Series) -> str:
    """A short name for one correlation: method, axes, the models it covers, and the top-1 used if not the default."""
    parts = [row.method.capitalize(), row.scale.removesuffix(" (%)")]
    parts += [] if row.subset in ("all", "pretrained") else [row.subset]
    if row.x != "ImageNet top-1":
        parts.append(row.x.replace("ImageNet top-1", "x: top-1").replace(" (", ", ").rstrip(")"))
    return ", ".join(parts)


def statistics_tables(*parts: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Every correlation, one (title, table) per part in the given order, rows indexed by data set and test."""
    table = pd.concat(parts, ignore_index=True)[_COLUMNS]
    return [(_PARTS.get(part, part), rows.set_index(["dataset", "test"])[["r", "ci_low", "ci_high", "p", "n"]].round(3))
            for part, rows in table.assign(test=table.apply(_label, axis=1)).groupby("part", sort=False)]


def kornblith_table() -> pd.DataFrame:
    """Kornblith et al.'s published numbers (their abstract)."""
    k = data.table("published/kornblith2019_abstract_numbers")
    return k.assign(quantity=k["quantity"].str.replace("_", " "))[["quantity", "setting", "value", "version"]]


def kornblith_note() -> str:
    """Why the table holds two versions of Kornblith et al.'s abstract, and which number this page compares with."""
    k = data.table("published/kornblith2019_abstract_numbers").set_index(["quantity", "setting", "source"])["value"]
    early, final = "abstract (earlier version)", "abstract"
    return (f"Kornblith et al.'s abstract as published and an earlier version of it disagree for fixed features: "
            f"r² = {k[('r_squared_imagenet_vs_transfer', 'fixed features', early)]:g} over "
            f"{k[('n_networks', 'all', early)]:g} networks earlier, r = "
            f"{k[('pearson_r_imagenet_vs_transfer', 'fixed features (logistic regression)', final)]:g} over "
            f"{k[('n_networks', 'all', final)]:g} published. "
            f"This page compares with the published fine-tuned r = "
            f"{k[('pearson_r_imagenet_vs_transfer', 'fine-tuned', final)]:g} only.")


def _weakest_shift(zoo_stats: pd.DataFrame) -> tuple[pd.Series, int]:
    """The shifted test set with the lowest probit Pearson r over all models, and how many sets were compared."""
    probit_all = zoo_stats[(zoo_stats.scale == "probit") & (zoo_stats.subset == "all")
                           & (zoo_stats.x == "ImageNet top-1")]
    return probit_all.loc[probit_all.r.idxmin()], len(probit_all)


def _enough(row: Mapping[str, Any]) -> dict[str, float]:
    return {"enough_n": row["n"]}  # the gate reads the number of models


def measured(zoo_stats: pd.DataFrame, probe_stats: pd.DataFrame, pr: xr.Dataset, overall: Mapping[str, dict],
             ft: xr.Dataset | None) -> dict[str, verdicts.Measured]:
    """What each declared test of the claim measured, for `verdicts.record`."""
    weakest, _ = _weakest_shift(zoo_stats)
    out = {"tllib": verdicts.Measured.of(overall["pooled"], _enough(overall["pooled"])),
           "tllib_mean_r": verdicts.Measured.of(overall["mean"], _enough(overall["mean"])),
           "zoo_shifted": verdicts.Measured.of(weakest, _enough(weakest), note=str(weakest.dataset))}
    for d, noise in _noise(pr).items():
        row = probe_stats[(probe_stats.dataset == d) & (probe_stats.scale == "logit")].iloc[0]
        gates = {**_enough(row), "spread": noise["ratio"]}  # spread across models over the SD of one score
        out[f"probe_{d.lower().replace('-', '_')}"] = verdicts.Measured.of(row, gates)
    if ft is not None:
        log_odds = probes.logit(ft.accuracy.transpose("model", "dataset").values)
        pooled = stats.correlation(ft.top1.values, log_odds.mean(1), dropna=True)  # < 3 models: NaN, gated
        out["finetune_here"] = verdicts.Measured.of(pooled, _enough(pooled))
    return out


def _includes(lo: float, hi: float, value: float) -> str:
    """Whether the interval [lo, hi] includes `value`, with the bound that decides when it does not."""
    if lo <= value <= hi:
        return f"includes {value}"
    return f"excludes {value} (it ends at {hi:.3f})" if hi < value else f"excludes {value} (it starts at {lo:.3f})"


def comparison_text(tl: xr.Dataset, tl_stats: pd.DataFrame, overall: Mapping[str, dict], zoo_stats: pd.DataFrame,
                    pr: xr.Dataset) -> str:
    """Kornblith et al.'s r beside the statistic that matches it, the per-data-set picture, what the other rows are."""
    k = data.table("published/kornblith2019_abstract_numbers").set_index(["quantity", "setting", "version"]).value
    version = "arXiv v3 / CVPR 2019 abstract"
    k_ft, k_fixed = (k[("pearson_r_imagenet_vs_transfer", s, version)]
                     for s in ("fine-tuned", "fixed features (logistic regression)"))
    k_nets, k_sets = (int(k[(q, "all", version)]) for q in ("n_networks", "n_datasets"))
    pearson = _pearson_by_dataset(tl_stats)
    positive = pearson[pearson.ci_low > 0]
    pooled, mean = overall["pooled"], overall["mean"]
    lo, hi = pooled["ci_low"], pooled["ci_high"]
    weakest, n_shifts = _weakest_shift(zoo_stats)
    n_models, n_sets = tl.sizes["model"], tl.sizes["dataset"]
    noise = _noise(pr)
    sd = " and ".join(f"{100 * v['sampling']:.1f} points ({d})" for d, v in noise.items())
    return (f"Kornblith et al. report one Pearson correlation across their {k_nets} networks between ImageNet top-1 "
            f"and transfer accuracy on {k_sets} data sets: r = {k_ft} after fine-tuning and {k_fixed} for logistic "
            f"regression on fixed features (abstract). The statistic on this page that matches theirs is the primary "
            f"test: one Pearson r across the Transfer-Learning-Library's {n_models} models between top-1 and the "
            f"mean over {n_sets} data sets of the log-odds fine-tuned accuracy, r = {pooled['r']:.2f} "
            f"[{lo:.3f}, {hi:.3f}]. It is the same statistic in form (one r across networks, transfer accuracy "
            f"summarised over data sets; the abstract does not say how they summarise) on other networks, data sets "
            f"and fine-tuning runs. Its 95% interval {_includes(lo, hi, k_ft)}. "
            f"The mean of the {n_sets} per-data-set r's, {mean['estimate']:.2f} [{mean['ci_low']:.2f}, "
            f"{mean['ci_high']:.2f}], is a different statistic, and so are the linear-probe rows (one r per data set "
            f"across mobile networks), which are not a like-for-like check of their {k_fixed}. Per data set, "
            f"{len(positive)} of {len(pearson)} fine-tuning correlations have a CI above 0 "
            f"({', '.join(positive.index) or 'none'}); the lowest is {pearson.r.idxmin()} "
            f"(r = {pearson.r.min():.2f}). The timm-zoo rows are ImageNet variants under distribution shift "
            f"({weakest.dataset} is the weakest of {n_shifts}), evidence about robustness, not about other data "
            f"sets. The linear probes are scored on n = {store.parameters_of(pr)['n_test']} test images per data "
            f"set, so one probe score has a binomial SD of {sd}.")


def _probed(pr: xr.Dataset) -> str:
    """'11 mobile networks' when every probed model is an offline catalogue model, else '21 models'."""
    names = _trained(pr).model.values
    offline = all(m in _catalogue().index for m in names)
    return f"{len(names)} {'mobile networks' if offline else 'models'}"


def outlook_text(pr: xr.Dataset) -> str:
    """What the `full` profile adds, and what would change the verdict."""
    full = PROFILES["full"]
    return (f"The `full` profile probes {len(full['models'])} models, {len(full['finetune_models'])} of them from "
            "timm's pretrained zoo of the kind Kornblith et al. used (ResNets, DenseNets, Inceptions, NASNets, "
            "MobileNet v2 and others, weights from the Hugging Face hub), on "
            f"{full['n_train']:,} training images per data set, and fine-tunes the timm models for {full['epochs']} "
            "epochs on a GPU. More models from more families would narrow the probe intervals, which with "
            f"{_probed(pr)} are wide; a negative correlation there would side with Tuggener et al. Data sets far "
            "from ImageNet, such as the fine-grained and medical sets of Tuggener et al., are not available offline. "
            + chapters.full_run_text(CLAIM, "probes", "The `full` profile"))

