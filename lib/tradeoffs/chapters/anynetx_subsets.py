"""AnyNetX subsets (Tuggener et al.): do source subsets with fewer classes rank architectures like other data sets?

AnyNetX designs are sampled in a band of multiply-adds and each is trained on nested class subsets of a source data
set and on other data sets (one Dask sweep, every run cached); the chapter reports accuracies, how far architectures
spread beyond measurement noise, the rank correlations between each source subset and each other data set, and the
declared test: ρ(fewest-class source) − ρ(full source), with its validity gates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure

from .. import anynet, chapters, claims, data, results, stats, store, sweep, train, verdicts
from ..errors import TradeoffsError

CLAIM = "anynetx_subsets"
PAPER_BAND = (340e6, 400e6)  # Tuggener et al.'s multiply-add band at 224² pixels
WHAT = {"cifar10": "CIFAR-10 (colour photos of vehicles and animals)",
        "fashion_mnist": "Fashion-MNIST (grayscale photos of clothing)",
        "digits": "the UCI optical digits (handwritten digits)"}
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(space=dict(max_depth=1, max_width=32, groups=[1, 2, 4, 8], macs=[0.2e6, 0.5e6], size=32,
                             stem_width=8, stem_stride=1, strides=[1, 2, 2, 2]),
                  n_architectures=4, n_replicates=2, epochs=1, source="cifar10", subsets=[2, 5, 10],
                  n_train=20, n_test=20, targets=[["fashion_mnist", 20, 20], ["digits", 20, 20]],
                  batch_size=16, lr=0.05, n_workers=2, device="cpu"),
    "default": dict(space="CIFAR", n_architectures=24, n_replicates=3, epochs=8, source="cifar10",
                    subsets=[2, 5, 10], n_train=200, n_test=1000,  # images per class (n_test: all CIFAR-10 holds)
                    targets=[["fashion_mnist", 200, 300], ["digits", 100, 70]],
                    batch_size=64, lr=0.05, n_workers=2, device="cpu"),
    "full": dict(space=dict(max_depth=16, max_width=1024, groups=[1, 2, 4, 8, 16, 32],
                            macs=[b * (64 / 224) ** 2 for b in PAPER_BAND], size=64, stem_width=32, stem_stride=2,
                            strides=[2, 2, 2, 2]),
                 n_architectures=100, n_replicates=10, epochs=30, source=None, subsets=[10, 100, 1000],
                 n_train=100, n_test=20, targets=[["cifar10", 500, 100], ["fashion_mnist", 500, 100],
                                                  ["digits", 100, 70]],
                 batch_size=128, lr=0.1, n_workers=1, device="auto"),
}


def settings(profile: str, given: dict[str, Any]) -> dict[str, Any]:
    """The profile's settings, overridden by the notebook parameters that are not None ("auto": CUDA when visible)."""
    P = chapters.settings(PROFILES, profile, given)
    if P["device"] == "auto":
        import torch

        P["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return P


# ---------------------------------------------------------------- the sweep

@dataclass(frozen=True)
class Plan:
    """What is trained: every design on every source subset and other data set, each with its recipe and images."""

    space: anynet.Space
    designs: list[anynet.Design]
    sources: list[anynet.Data]
    targets: list[anynet.Data]
    recipes: dict[anynet.Data, train.Recipe]
    tasks: list[anynet.Task]
    arrays: dict[anynet.Data, tuple[np.ndarray, ...]]

    @property
    def src(self) -> list[str]:
        """Source subset labels, fewest classes first."""
        return [d.label for d in self.sources]

    @property
    def tgt(self) -> list[str]:
        """Labels of the other data sets."""
        return [d.label for d in self.targets]

    @property
    def n_test(self) -> dict[str, int]:
        """Test images per data set label."""
        return {d.label: len(self.arrays[d][3]) for d in self.sources + self.targets}

    @property
    def steps(self) -> dict[str, int]:
        """SGD steps per source subset label."""
        return {d.label: self.recipes[d].epochs * (len(self.arrays[d][1]) // self.recipes[d].batch_size)
                for d in self.sources}


def _source_classes(source: str) -> int:
    return 10 if source == "cifar10" else sum(p.is_dir() for p in Path(source.removeprefix("folder:")).iterdir())


def plan(P: dict[str, Any]) -> Plan:
    """Sample the designs and lay out the runs; loads every data set's images (their content is in the keys)."""
    if P["source"] is None:
        raise TradeoffsError("the full profile trains on ImageNet, which you download yourself from image-net.org: "
                             "pass -p source folder:/path/to/ILSVRC2012/train (one folder per class).")
    space = anynet.CIFAR if P["space"] == "CIFAR" else anynet.Space(**P["space"])
    designs = anynet.sample(P["n_architectures"], space, seed=P["seed"])
    order = np.random.default_rng(P["seed"]).permutation(_source_classes(P["source"]))  # nested: first k of one order
    sources = [anynet.Data(P["source"], P["n_train"], P["n_test"], tuple(int(c) for c in order[:k]), space.size,
                           P["seed"]) for k in P["subsets"]]
    targets = [anynet.Data(name, n_tr, n_te, None, space.size, P["seed"]) for name, n_tr, n_te in P["targets"]]
    # One training budget for every source subset: a k-class subset is trained for epochs × (all classes / k) epochs,
    # so that it sees as many images (and takes as many SGD steps) as the full source.
    epochs = {**{d: P["epochs"] * P["subsets"][-1] // k for d, k in zip(sources, P["subsets"])},
              **{d: P["epochs"] for d in targets}}
    recipes = {d: train.Recipe(epochs=e, batch_size=P["batch_size"], lr=P["lr"], seed=P["seed"])
               for d, e in epochs.items()}
    tasks = [anynet.Task(d, data, recipes[data], init_seed=P["seed"] + r, device=P["device"])
             for r, group in enumerate((designs, designs[:P["n_replicates"]])) for d in group
             for data in sources + targets]
    return Plan(space, designs, sources, targets, recipes, tasks, {d: anynet.arrays(d) for d in sources + targets})


def _class_names(d: anynet.Data) -> str:
    """The kept classes by name where the data set names them (CIFAR-10 and Fashion-MNIST), else ''."""
    if d.name not in ("cifar10", "fashion_mnist") or d.classes is None:
        return ""
    names = getattr(data, d.name)("test")["class_name"].values
    return f" ({', '.join(str(names[c]) for c in d.classes)})"


def _images(p: Plan, d: anynet.Data) -> str:
    x_train, y_train, x_test, _ = p.arrays[d]
    return (f"{len(np.unique(y_train))} classes{_class_names(d)}, {len(x_train):,} training and {len(x_test):,} test "
            "images")


def plan_text(p: Plan, P: dict[str, Any]) -> str:
    """What this run trains, then which data sets it uses and why they stand in for the paper's."""
    macs = p.space.macs
    budgets = ", ".join(f"{p.recipes[d].epochs} on {d.label}" for d in p.sources[:-1])
    run = (f"This run: **{len(p.designs)} architectures** (multiply-adds {macs[0] / 1e6:g}–{macs[1] / 1e6:g} M at "
           f"{p.space.size}² pixels), {len(p.sources)} source data sets ({', '.join(p.src)}), "
           f"{len(p.targets)} other data sets ({', '.join(p.tgt)}), **{P['epochs']} epoch(s)** on the full "
           f"source and the other data sets ({budgets}: the same images seen), and "
           f"{P['n_replicates']} architectures trained twice: {len(p.tasks)} training runs on {P['device']}.")
    source = p.sources[0].name
    subsets = "; ".join(f"{d.label}: {_images(p, d)}" for d in p.sources)
    others = "; ".join(f"{d.label} = {WHAT.get(d.name, d.name)}: {_images(p, d)}" for d in p.targets)
    datasets = (f"The source subsets are class subsets of {WHAT.get(source, source)}, standing in for the paper's "
                f"ImageNet subsets: {subsets}. The other data sets: {others}. They stand in for Tuggener et al.'s "
                "other benchmarks, which come from a diverse array of application domains and are not available "
                "offline: like those, they come from domains other than the source's, and they are small enough to "
                "train every architecture on them on a CPU.")
    return f"{run}\n\n{datasets}"


def _compute(p: Plan, keys: list[str], P: dict[str, Any], scheduler: str | None) -> xr.Dataset:
    cells = sweep.run(anynet.run_task, p.tasks, keys, kind="anynetx", scheduler=scheduler, n_workers=P["n_workers"],
                      desc="AnyNetX runs")
    facts = anynet.describe(p.designs, p.space.size)
    runs = sweep.combine(cells).sel(architecture=[d.name for d in p.designs])
    runs = runs.assign_coords({k: ("architecture", v) for k, v in facts.items()})
    data = p.sources + p.targets
    return runs.sel(dataset=[d.label for d in data]).assign_coords(
        role=("dataset", ["source"] * len(p.sources) + ["target"] * len(p.targets)),
        classes=("dataset", [len(np.unique(p.arrays[d][1])) for d in data]))


def load_runs(p: Plan, P: dict[str, Any], profile: str, scheduler: str | None) -> xr.Dataset:
    """Every run's accuracy (architecture × dataset × seed): stored results when the inputs match, else the sweep."""
    data_key = {d: results.content_key(*p.arrays[d]) for d in p.arrays}
    keys = [results.content_key("anynetx-task-v1", dataclasses.asdict(t), data_key[t.data], anynet, train)
            for t in p.tasks]
    inputs_key = results.content_key("anynetx_subsets-v1", {k: v for k, v in P.items() if k != "n_workers"},
                                     sorted(data_key.values()), keys, anynet, train, sweep)
    return store.load_or_compute(claims.result_name(CLAIM, "runs", profile), inputs_key,
                                   lambda: _compute(p, keys, P, scheduler), profile=profile, parameters=P,
                                   tolerance={"rtol": 0.0, "atol": 0.02, "timings": ["train_seconds"]})


def accuracy(runs: xr.Dataset, seed: int) -> pd.DataFrame:
    """Test accuracy of the first initial seed, architecture × dataset."""
    return runs["test_accuracy"].sel(seed=seed).to_pandas()


def cost_text(runs: xr.Dataset, n_runs: int, n_workers: int) -> str:
    """What the runs cost when they were trained, and what this computation took."""
    cpu_minutes = float(runs["train_seconds"].sum()) / 60  # as recorded by each run when it was trained
    return (f"The {n_runs} training runs add up to {cpu_minutes:.0f} minutes on one CPU thread (about "
            f"{cpu_minutes / n_workers:.0f} minutes of wall time on {n_workers} Dask workers); this computation "
            f"took {runs.attrs['elapsed_s'] / 60:.1f} minutes on {runs.attrs['device']} "
            f"({runs.attrs['created_utc']}); a rerun reloads the runs from its cache.")


# ---------------------------------------------------------------- analysis

def noise_table(runs: xr.Dataset, acc: pd.DataFrame, n_test: dict[str, int]) -> pd.DataFrame:
    """Per data set: spread across architectures, seed and test-sampling noise, their ratio and the reliability."""
    rep = runs["test_accuracy"].dropna("architecture", how="any")  # the architectures trained with both seeds
    rows = {d: stats.noise_ratio(acc[d], n_test[d], rep.sel(dataset=d).transpose("architecture", "seed"))
            for d in acc.columns}
    return pd.DataFrame(rows).T.astype(float).assign(**{"test images": pd.Series(n_test)})


def correlations(acc: pd.DataFrame, src: list[str], tgt: list[str], subsets: list[int]) -> pd.DataFrame:
    """Spearman and Kendall correlation (95% CIs) of every source subset with every other data set."""
    rows = []
    for s, k in zip(src, subsets):
        for t in tgt:
            sp, kt = (stats.correlation(acc[s], acc[t], method=m) for m in ("spearman", "kendall"))
            rows.append({"classes": k, "source": s, "target": t, "spearman": sp["r"], "sp_low": sp["ci_low"],
                         "sp_high": sp["ci_high"], "kendall": kt["r"], "kt_low": kt["ci_low"],
                         "kt_high": kt["ci_high"], "p": sp["p"], "n": sp["n"]})
    return pd.DataFrame(rows)


def correlation_table(corr: pd.DataFrame) -> pd.DataFrame:
    """The correlations as the page shows them: estimate [95% CI]."""
    def fmt(cols: list[str]) -> list[str]:
        return [f"{r:.2f} [{a:.2f}, {b:.2f}]" for r, a, b in corr[cols].values]

    return pd.DataFrame({"source": corr["source"], "target": corr["target"],
                         "Spearman ρ [95% CI]": fmt(["spearman", "sp_low", "sp_high"]),
                         "Kendall τ [95% CI]": fmt(["kendall", "kt_low", "kt_high"]), "n": corr["n"]})


def measured(acc: pd.DataFrame, reliability: pd.Series, src: list[str], tgt: list[str], chance: float,
             seed: int) -> dict[str, verdicts.Measured]:
    """The declared tests: ρ(fewest) − ρ(full source) over all other data sets and per data set, with the gates."""
    few, full = src[0], src[-1]
    few_mean = stats.mean_ci(acc[few])  # mean accuracy over architectures, t-interval
    gates = {"above_chance": 100 * (few_mean["ci_low"] - chance), "reliable": float(reliability.min()),
             "architectures": len(acc)}
    declared = {t.id for t in claims.claim(CLAIM).tests}
    out = {}
    for test_id, cols in [("subset_diff", tgt), *((f"subset_diff_{t}", [t]) for t in tgt)]:
        if test_id in declared:
            r = stats.corr_diff(acc[cols].to_numpy(), acc[few], acc[full], method="spearman", seed=seed)
            used = reliability[[few, full, *cols]].min()
            out[test_id] = verdicts.Measured(r["estimate"], r["ci_low"], r["ci_high"], r["n"], ci_method=r["ci_method"],
                                             gates={**gates, "reliable": float(used)})
    return out


def noise_text(acc: pd.DataFrame, corr: pd.DataFrame, noise: pd.DataFrame, steps: dict[str, int],
               P: dict[str, Any]) -> str:
    """Measurement noise, the attenuation-corrected correlations and the training budget, in one paragraph."""
    few, full = corr["source"].iloc[0], corr["source"].iloc[-1]
    targets = list(corr["target"].unique())
    rel, ratio, n_test = noise["reliability"], noise["ratio"], noise["test images"].astype(int)
    sp = corr.set_index(["source", "target"])["spearman"]
    corrected = {s: float(np.mean([stats.attenuation_corrected(float(sp[s, t]), rel[s], rel[t]) for t in targets]))
                 for s in (few, full)}
    n = len(acc)
    return (f"Measurement noise: the spread across the {n} architectures is {ratio.min():.1f}–{ratio.max():.1f} "
            f"times the noise of one measurement (seed noise from the {P['n_replicates']} architectures trained "
            f"twice; test noise from {n_test.min():,}–{n_test.max():,} test images per data set), lowest on "
            f"{ratio.idxmin()} (reliability {rel.min():.2f}, {n_test[ratio.idxmin()]:,} test images). Corrected for "
            "attenuation (a point estimate without an interval), the mean correlation with the "
            f"{len(targets)} other data sets is {corrected[few]:.2f} for {few} and {corrected[full]:.2f} for {full} "
            f"({n} architectures). Training budget: {steps[few]} SGD steps on {few} (mean accuracy "
            f"{acc[few].mean():.2f} over {n} architectures on {n_test[few]:,} test images, chance "
            f"{1 / P['subsets'][0]:.2f}) against {steps[full]} on {full} (mean accuracy {acc[full].mean():.2f} on "
            f"{n_test[full]:,} test images); every source subset here holds {P['n_train']} training images per class, "
            "where the paper's ImageNet subsets keep all of ImageNet's images of each class they keep.")


def available_test_images(p: Plan) -> dict[str, int]:
    """Per data set label: the test images its classes hold in all (CIFAR-10 and Fashion-MNIST: their test splits;
    digits and folders: every image not used for training)."""
    loaders = {"cifar10": lambda: data.cifar10("test"), "fashion_mnist": lambda: data.fashion_mnist("test"),
               "digits": data.digits}
    labels_of: dict[str, np.ndarray] = {}  # each data set read once (the source subsets share CIFAR-10)
    out = {}
    for d in p.sources + p.targets:
        if d.name not in loaders:
            continue
        if d.name not in labels_of:
            labels_of[d.name] = loaders[d.name]()["labels"].values
        labels = labels_of[d.name]
        classes = d.classes if d.classes is not None else np.unique(labels)
        held = int(np.isin(labels, classes).sum())
        out[d.label] = held - (len(classes) * d.n_train if d.name == "digits" else 0)
    return out


def reach_text(noise: pd.DataFrame, label: str, available: int) -> str:
    """How far more test images could lift `label`'s reliability: with all `available` of them, and with unlimited
    ones (seed noise alone); sampling noise falls as 1/√n (`stats.noise_ratio`)."""
    row = noise.loc[label]
    n = int(row["test images"])
    held = max(available, n)
    sampling = float(row["sampling"]) * math.sqrt(n / held)
    if not float(row["across"]) > 0:
        return (f"On {label}, the architectures' accuracies do not differ at all, so no number of test images can "
                "make them reliable.")

    def reliability(sampling_sd: float) -> float:
        return 1 - (math.hypot(float(row["seed"]), sampling_sd) / float(row["across"])) ** 2

    return (f"On {label}, seed noise (SD {float(row['seed']):.3f} of one run across retrainings) "
            f"{'exceeds' if row['seed'] > row['sampling'] else 'is below'} test-sampling noise "
            f"(SD {float(row['sampling']):.3f} on {n:,} test images). By the same formula, scoring all {held:,} "
            f"test images its classes hold would give reliability {reliability(sampling):.2f}, and unlimited test "
            f"images at most {reliability(0.0):.2f}; beyond that only lower seed noise (longer training) or a wider "
            "spread of architectures helps. These are estimates from this run's noise, not a run with those "
            "settings.")


def gates_text(v: xr.Dataset, noise: pd.DataFrame, src: list[str], tgt: list[str],
               available: dict[str, int] | None = None) -> str:
    """The primary test's gates, each measured value beside its threshold, and the data set the noise gate reads;
    when that gate fails and `available` is given, how far more test images could lift it (`reach_text`)."""
    spec = claims.claim(CLAIM).primary(v.attrs["profile_judged"])
    row = v.sel(test=spec.id)
    parts = []
    for g in spec.gates:
        value = float(row.gate_measured.sel(gate=g.id))
        need = f"{'at least' if g.at_least else 'at most'} {g.threshold:g}" if g.threshold >= 1e-6 else "above 0"
        shown = f"{value:.3g}" if np.isfinite(value) else "not measurable"
        parts.append(f"{g.id} {shown} (needs {need}: {'passes' if g.passes(value) else '**fails**'})")
    used = noise.loc[[src[0], src[-1], *tgt]]
    least = used["reliability"].idxmin()
    text = (f"The primary test's validity gates, measured against their thresholds: {'; '.join(parts)}. The "
            f"reliability gate reads the least reliable of the data sets the test uses: {least} "
            f"({int(used.loc[least, 'test images']):,} test images, {int(row.n)} architectures).")
    gate = next((g for g in spec.gates if g.id == "reliable"), None)
    if gate is not None and available and least in available \
            and not gate.passes(float(row.gate_measured.sel(gate="reliable"))):
        text += " " + reach_text(noise, least, available[least])
    return text + first_run_text(v)


FIRST_RUN = "firstrun"  # the part name of the stored verdict of the run before the source test images were raised


def first_run_text(v: xr.Dataset) -> str:
    """The design change made after a run was seen, from that run's stored verdict ("" when none is stored)."""
    profile = v.attrs["profile_judged"]
    try:
        first = store.load(claims.result_name(CLAIM, FIRST_RUN, profile))
    except TradeoffsError:
        return ""
    before, now = (store.parameters_of(ds).get("n_test") for ds in (first, v))
    if before is None or now is None or before == now:
        return ""
    row = first.sel(test=first.attrs["primary_test"])
    reliable = float(row.gate_measured.sel(gate="reliable"))
    return (f" The first `{profile}` run with the present training budget (stored as "
            f"`{claims.result_name(CLAIM, FIRST_RUN, profile)}.nc`; earlier designs are in the verdict box's history) "
            f"scored each source subset on {before:,} test images per class "
            f"and failed the reliability gate ({reliable:.2f}); its primary estimate was {float(row.estimate):+.2f} "
            f"[{float(row.ci_low):+.2f}, {float(row.ci_high):+.2f}], not judged. After that result was seen, the source "
            f"subsets' test images were raised to {now:,} per class (all CIFAR-10 holds) for this run; the primary "
            "test, its gates and the training are the same in both runs.")


def full_text(v: xr.Dataset) -> str:
    """What the `full` profile would change, against the primary interval of this run."""
    fp = PROFILES["full"]
    row = v.sel(test=v.attrs["primary_test"])
    band = "–".join(f"{b / 1e6:g}" for b in PAPER_BAND)
    width = float(row.ci_high - row.ci_low)
    interval = f"spans {width:.2f}" if np.isfinite(width) else "is undefined"
    return (f"The `full` profile samples {fp['n_architectures']} architectures from the paper's AnyNetX space with "
            f"Tuggener et al.'s {band} M multiply-add band scaled to {fp['space']['size']}² pixels, trains them for "
            f"{fp['epochs']} epochs on ImageNet subsets of {', '.join(map(str, fp['subsets']))} classes (ImageNet "
            f"supplied by the user as a folder) and on {', '.join(t[0] for t in fp['targets'])}, on a GPU through the "
            f"same Dask sweep. More architectures narrow the bootstrap interval, which here {interval} with "
            f"{int(row.n)} architectures; training longer on more images "
            "is expected to lower the seed-to-seed noise that blurs rankings of small networks trained briefly. "
            "Tuggener et al.'s eight other data sets (named in their paper; the abstract kept here does not list them) "
            "are not available offline. " + chapters.full_run_text(CLAIM, "runs"))


# ---------------------------------------------------------------- figures

def accuracy_figure(acc: pd.DataFrame, chance: pd.Series, n_test: dict[str, int]) -> Figure:
    """Accuracy of every architecture on every data set (box + points), with each data set's chance level."""
    long = acc.reset_index().melt(id_vars="architecture", var_name="data set", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.boxplot(data=long, x="data set", y="accuracy", color="0.9", showfliers=False, ax=ax)
    sns.stripplot(data=long, x="data set", y="accuracy", color="C0", size=5, jitter=0.15, ax=ax)
    for i, d in enumerate(acc.columns):
        ax.hlines(chance[d], i - 0.4, i + 0.4, colors="C3", linestyles=":", label="chance" if i == 0 else None)
    ax.set_xticks(range(len(acc.columns)), [f"{d}\n{int(n_test[d]):,} test" for d in acc.columns])
    ax.set(xlabel="data set and its test images (source subsets, then the other data sets)",
           ylabel="test accuracy (fraction)",
           ylim=(0, 1), title=f"{len(acc)} AnyNetX architectures, one run each per data set")
    ax.legend(loc="lower left")
    return fig


def scatter_figure(acc: pd.DataFrame, src: list[str], tgt: list[str], chance: pd.Series) -> Figure:
    """Each other data set's accuracy against each source subset's, one panel per pair, with Spearman ρ and chance."""
    fig, axes = plt.subplots(len(tgt), len(src), figsize=(11, 3.4 * len(tgt)), squeeze=False)
    for i, t in enumerate(tgt):
        for j, s in enumerate(src):
            ax = axes[i, j]
            rho = stats.correlation(acc[s], acc[t], method="spearman")["r"]
            sns.regplot(x=acc[s], y=acc[t], ax=ax, ci=None, scatter_kws=dict(s=25), line_kws=dict(color="C1", lw=1))
            ax.axvline(chance[s], color="C3", ls=":", lw=1, label="chance")
            ax.axhline(chance[t], color="C3", ls=":", lw=1)
            ax.set(title=f"Spearman ρ = {rho:.2f}", xlabel=f"{s} accuracy" if i == len(tgt) - 1 else "",
                   ylabel=f"{t} accuracy" if j == 0 else "")
    axes[0, 0].legend(loc="lower right")
    fig.suptitle(f"Source subsets (columns) against the other data sets (rows), {len(acc)} architectures")
    fig.tight_layout()
    return fig


def correlation_figure(corr: pd.DataFrame, source: str) -> Figure:
    """Spearman ρ (95% CI) against the number of source classes, one line per other data set."""
    subsets = corr["classes"].unique()
    n_tgt = corr["target"].nunique()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (t, g) in enumerate(corr.groupby("target", sort=False)):
        x = np.arange(len(g)) + (i - (n_tgt - 1) / 2) * 0.08
        ax.errorbar(x, g["spearman"], yerr=[g["spearman"] - g["sp_low"], g["sp_high"] - g["spearman"]], fmt="o-",
                    capsize=4, label=t, color=f"C{i}")
    ax.axhline(0, color="0.5", lw=1)
    ax.set_xticks(np.arange(len(subsets)), [f"{k} classes" for k in subsets])
    ax.set(xlabel=f"source: {source.split('/')[-1]} subset ({int(corr['n'].min())} architectures per point)",
           ylabel="Spearman ρ with the other data set", ylim=(-1.05, 1.05),
           title="The claim: correlations rise as source classes fall (right to left)")
    ax.legend(title="other data set", loc="lower right")
    return fig
