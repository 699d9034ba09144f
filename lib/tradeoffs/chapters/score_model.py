"""Score your model: the page of one scored model (`tradeoffs.score`) — its scorecard, the sentences that say what
was scored and against what, and the claims' figures with the model marked (`plots.highlight`).

The figures are the chapters' own, drawn from their stored `default` results; where a chapter's main figure plots a
measure that scoring does not compute (serre-lab's ClickMe alignment), the model is marked on the axis it shares
(its top-1) and nowhere else.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import claims, data, plots, score, store
from ..score import REFERENCE
from . import dataset_correlation as dc
from . import human_alignment as ha
from . import inverted_u as iu

EXAMPLES = {"smoke": "mobilenet_v1_0.25_128_quant", "default": "efficientnet_lite2",  # the page's example model
            "full": "efficientnet_lite2"}


def scoring_profile(profile: str, bapps: str | None) -> str:
    """The profile whose sizes `score.score` uses. `full` scores at the reference sizes (its values must compare
    with the stored results they are ranked among) and downloads BAPPS into `bapps` when it is absent there."""
    if profile != "full":
        return profile
    if bapps is not None and not (Path(bapps) / "2afc" / "val").is_dir():
        data.download_bapps(bapps)
    return REFERENCE
OWN_REFERENCES = ("the project's", "the inverted U's")  # how `score` names the chapters' stored results
NOT_PER_MODEL = {  # claims whose measures no single trained model has
    "early_stopping": "compares the checkpoints of one training run, not trained models",
    "anynetx_subsets": "compares architectures trained on subsets of the classes, not trained models",
}


def card_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per measured value and comparison: value, the claims it serves, and each comparison (rank of n,
    percentile, the references' range); what was not measured is `not_measured_text`'s."""
    measured = ds.isel(measure=(ds["status"] == "measured").values)
    values = measured[["value", "label", "claims"]].to_dataframe()
    values["claims"] = values["claims"].str.replace("_", " ")
    if "comparison" not in ds.dims:
        return values.set_index("label")
    comp = ds[["comparison_measure", "reference", "n_reference", "rank", "percentile", "reference_min",
               "reference_max"]].to_dataframe()
    comp["rank"] = [f"{r} of {n + 1}" for r, n in zip(comp["rank"], comp["n_reference"])]
    comp["percentile"] = [f"{p:.0f}" for p in comp["percentile"]]
    comp["references' range"] = [f"{lo:.3g}–{hi:.3g}" for lo, hi in zip(comp["reference_min"], comp["reference_max"])]
    table = values.join(comp.set_index("comparison_measure")[["reference", "rank", "percentile",
                                                              "references' range"]], how="left")
    table = table.set_index("label").round({"value": 3}).astype(object)
    return table.where(table.notna(), "")


def not_measured_text(ds: xr.Dataset) -> str:
    """The measures left out of the card, each with why (its status), as a Markdown list; "" when none."""
    rows = [(str(ds["label"].sel(measure=m).item()), str(ds["status"].sel(measure=m).item()))
            for m in ds["measure"].values if ds["status"].sel(measure=m).item() != "measured"]
    return "".join(["Not measured here:\n\n"] + [f"- {label}: {why}\n" for label, why in rows]) if rows else ""


def card_text(ds: xr.Dataset) -> str:
    """What was scored, how, against what, what does not apply and why, and how long it took."""
    imagenet = ds.attrs["kind"] == score.IMAGENET
    parameters = store.parameters_of(ds)
    measured = [str(m) for m in ds["measure"].values if ds["status"].sel(measure=m).item() == "measured"]
    n = parameters["n_images"]
    stimuli = ("all model-vs-human stimuli of the three data sets" if not n else
               "a seeded subset of the stimuli (" + ", ".join(f"{v} {k}" for k, v in n.items()) + ")")
    sentences = [
        f"`{ds.attrs['model']}` is {'an ImageNet' if imagenet else 'a CIFAR-10'} classifier ({ds.attrs['source']}; "
        f"input {ds.attrs['input_size']}, {int(ds.attrs['num_params']):,} parameters).",
        f"Accuracy: {_top1_words(ds)}.",
        f"Profile `{ds.attrs['profile']}`: {len(measured)} measures computed"
        + (f" on {stimuli}, linear probes on {parameters['n_train']} training, {parameters['n_val']} validation and "
           f"{parameters['n_test']} test images per data set." if imagenet else "."),
        _references_text(ds),
        f"Scoring took {float(ds.attrs['elapsed_s']) / 60:.1f} min on {ds.attrs['device']}, with "
        f"{float(ds.attrs['cpu_s']) / 60:.1f} min of CPU time over all threads.",
        *(f"{claims.claim(c).title} does not apply: it {why}." for c, why in NOT_PER_MODEL.items()),
        own_text(ds)]
    return " ".join(s for s in sentences if s)


def _references_text(ds: xr.Dataset) -> str:
    if not _own_references(ds):
        return (f"No stored `{REFERENCE}` results of the chapters were found, so only the published tables rank it "
                "(`python -m tradeoffs.run` computes the chapters' results).")
    smoke = " (computed on all images: a smoke score is indicative only)" if ds.attrs["profile"] != REFERENCE else ""
    return (f"The references are the project's stored `{REFERENCE}` results{smoke}; a model scored under its own name "
            "is left out of its references. Their ImageNet networks are offline mobile networks, most of them "
            "int8-quantised TFLite graphs, not the state-of-the-art networks the papers' claims are about (the Human "
            "alignment page lists them).")


def _own_references(ds: xr.Dataset) -> bool:
    """Whether the model was ranked among the chapters' stored results (not only among the published tables)."""
    return "reference" in ds and any(str(r).startswith(OWN_REFERENCES) for r in ds["reference"].values)


def own_text(ds: xr.Dataset) -> str:
    """For a model that the chapters scored too, on the same images, the largest difference between its values here
    and theirs (a check that scoring computes the chapters' measures); "" otherwise."""
    name = ds.attrs["model"]
    obs = score.stored(claims.result_name("human_alignment", "observers", REFERENCE))
    pr = score.stored(claims.result_name("dataset_correlation", "probes", REFERENCE))
    theirs = {}
    if obs is not None and name in obs["observer"].values:
        ec = obs["error_consistency_mean"].sel(observer=name)
        theirs.update(shape_bias=float(obs["shape_bias"].sel(observer=name)), error_consistency=float(ec.mean()),
                      **{f"error_consistency_{d}": float(ec.sel(dataset=d)) for d in ec["dataset"].values})
    if pr is not None and name in pr["model"].values:
        theirs.update({f"probe_{d}": float(pr["accuracy"].sel(model=name, dataset=d)) for d in pr["dataset"].values})
    gaps = [abs(_value(ds, m) - v) for m, v in theirs.items() if math.isfinite(_value(ds, m) - v)]
    if not gaps or ds.attrs["profile"] != REFERENCE:
        return ""
    return (f"`{name}` is one of the chapters' own models, scored here on the same images, so their stored values "
            f"check this scoring: over the {len(gaps)} measures both computed, the largest difference is "
            f"{max(gaps):.2g}.")


def _top1_words(ds: xr.Dataset) -> str:
    top1 = float(ds["value"].sel(measure="top1"))
    label = ds["label"].sel(measure="top1").item()
    if not math.isfinite(top1):
        return f"{label} unknown (not in timm's results table; pass --top1), so it is drawn as a line, not a point"
    return f"{label} {top1:.1f}, {ds.attrs['top1_source']}"


def _value(ds: xr.Dataset, measure: str) -> float:
    return float(ds["value"].sel(measure=measure))


def _label(ds: xr.Dataset) -> str:
    return f"{ds.attrs['model']} (scored here)"


def _axis(fig: Figure, title: str) -> Axes:
    return next(ax for ax in fig.axes if ax.get_title().replace("\n", " ") == title)


def inverted_u_figure(ds: xr.Dataset) -> Figure | None:
    """The inverted U's main figure (stored `default` results) with the model on the panels of its measures."""
    P = iu.settings(REFERENCE, {"seed": 0})
    cifar = score.stored(claims.result_name("inverted_u", "cifar", REFERENCE))
    if cifar is None or score.stored(claims.result_name("human_alignment", "observers", REFERENCE)) is None:
        return None  # the chapter's stored results are the figure
    points = iu.cifar_points(cifar, iu.load_early(P, REFERENCE)[0])
    imagenet, _ = iu.load_imagenet(P, REFERENCE)
    curves = iu.curves(points, imagenet)
    fig = iu.fits_figure(curves, iu.fit(curves, P), points, iu.chance(data.cifar10h()[0]),
                         imagenet.attrs.get("human_kappa"))
    if ds.attrs["kind"] == score.IMAGENET:
        top1 = _value(ds, "top1")
        plots.highlight(_axis(fig, iu.EC), top1, _value(ds, "error_consistency"), _label(ds))
        plots.highlight(_axis(fig, iu.SHAPE), top1, _value(ds, "shape_bias"), _label(ds))
    else:
        acc = float(ds["inverted_u_accuracy"])
        plots.highlight(_axis(fig, iu.CIFAR), acc, _value(ds, "cifar10h_alignment"), _label(ds))
        plots.highlight(_axis(fig, iu.NN), acc, _value(ds, "nn_human_prob"), _label(ds))
    return fig


def human_alignment_figure(ds: xr.Dataset) -> Figure | None:
    """The human-alignment chapter's offline-proxy figure (shape bias and error consistency against top-1, or
    CIFAR-10H for a CIFAR-10 model) with the model marked."""
    if ds.attrs["kind"] == score.IMAGENET:
        obs = score.stored(claims.result_name("human_alignment", "observers", REFERENCE))
        if obs is None:
            return None
        fig = ha.accuracy_figure(obs)
        top1 = _value(ds, "top1")
        plots.highlight(fig.axes[0], top1, _value(ds, "shape_bias"), _label(ds))
        plots.highlight(fig.axes[1], top1, _value(ds, "error_consistency"), _label(ds))
        return fig
    cifar = score.stored(claims.result_name("human_alignment", "cifar10h", REFERENCE))
    if cifar is None:
        return None
    fig = ha.cifar_figure(cifar)
    accuracy = 100 * _value(ds, "cifar10_accuracy")
    plots.highlight(fig.axes[0], accuracy, _value(ds, "cifar10h_kl"), _label(ds))
    plots.highlight(fig.axes[1], accuracy, _value(ds, "cifar10h_entropy_spearman"), _label(ds))
    return fig


def clickme_figure(ds: xr.Dataset) -> Figure | None:
    """The human-alignment main figure (serre-lab's ClickMe table) with the model's top-1 as a vertical line: its
    ClickMe alignment is not measured, so it is not placed on that axis. None without an ImageNet top-1."""
    harm = score.stored(claims.result_name("human_alignment", "harmonization", REFERENCE))
    top1 = _value(ds, "top1")
    if harm is None or ds.attrs["kind"] != score.IMAGENET or not math.isfinite(top1):
        return None
    fig = ha.harmonization_figure(harm)
    plots.highlight(fig.axes[0], top1, math.nan, f"{_label(ds)}: top-1 only")
    fig.axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def probe_figure(ds: xr.Dataset) -> Figure | None:
    """The dataset-correlation chapter's linear-probe figure with the model marked (ImageNet models only)."""
    pr = score.stored(claims.result_name("dataset_correlation", "probes", REFERENCE))
    if pr is None or ds.attrs["kind"] != score.IMAGENET:
        return None
    fig = dc.probe_figure(pr)
    for ax, d in zip(fig.axes, pr["dataset"].values):
        plots.highlight(ax, _value(ds, "top1"), _value(ds, f"probe_{d}"), _label(ds), legend=False)
    fig.legends.clear()  # the figure's one legend, now with the scored model
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="lower center", ncol=3)
    return fig


FIGURES = {"inverted_u": inverted_u_figure, "human_alignment": human_alignment_figure, "clickme": clickme_figure,
           "probes": probe_figure}


def write_figures(ds: xr.Dataset, folder: Path, stem: str) -> None:
    """Each figure that applies to the model as `<folder>/<stem>_<figure>.png` (the command's --figures)."""
    folder.mkdir(parents=True, exist_ok=True)
    plots.set_style()
    for name, make in FIGURES.items():
        fig = make(ds)
        if fig is not None:
            path = folder / f"{stem}_{name}.png"
            fig.savefig(path, bbox_inches="tight")
            plt.close(fig)
            print(f"wrote {path}")
