"""Score one model against the five claims (the command `python -m tradeoffs.score MODEL` is `__main__.py`).

MODEL is one of the offline models (`models.available()`), a timm name (its weights come from the Hugging Face hub,
so online only), or, with `--weights`, the name given to a local checkpoint of the timm architecture `--arch`
(default: MODEL). Every model-level measure the claims use that applies to the model is computed with the library's
own functions, at the sizes of the chapters' profiles: ImageNet top-1 (timm's results table, the catalogue, or
`--top1`), shape bias and error consistency on the model-vs-human stimuli (`observers`), linear probes on CIFAR-10
and Fashion-MNIST (`probes`), CIFAR-10H alignment for CIFAR-10 models (`observers`, `perceptual`), and the BAPPS 2AFC
score when a BAPPS folder is given (`perceptual`). Each value is ranked among the project's stored `default` results
and, for top-1, timm's and serre-lab's published tables. One results file, `score_model_<model>_<profile>.nc`,
holds the values, the ranks, the model's trials and their provenance; `--csv` writes the trials in model-vs-human's
raw-data format (`write_mvh_csv`, read back by `read_mvh_csv`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from .. import claims, data, features, metrics, models, observers, perceptual, probes, results, store
from ..chapters import dataset_correlation as dc
from ..chapters import human_alignment as ha
from ..chapters import inverted_u as iu
from ..errors import TradeoffsError

NOTEBOOK = "score_model"
REFERENCE = "default"  # the profile whose stored results the model is compared with
SCORE_PROFILES = ("smoke", "default")
IMAGENET, CIFAR10 = "imagenet", "cifar10"
MVH_COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")
MVH_FILE = re.compile(r"(?P<dataset>[^_]+)_(?P<model>.+)_session-1\.csv")
# measure id: (label, higher is more accurate or more human-like, the claims whose tests use it)
MEASURES = {
    "top1": ("ImageNet top-1 (%)", True, "inverted_u, dataset_correlation, human_alignment"),
    "shape_bias": ("shape bias on cue-conflict (fraction of shape decisions)", True, "human_alignment, inverted_u"),
    "error_consistency": ("error consistency with people, mean of 3 data sets (κ)", True,
                          "human_alignment, inverted_u"),
    **{f"error_consistency_{d}": (f"error consistency with people, {d} (κ)", True, "human_alignment")
       for d in data.STIMULUS_SETS},
    **{f"probe_{d}": (f"linear-probe accuracy, {d} (%)", True, "dataset_correlation")
       for d in dc.PROFILES[REFERENCE]["datasets"]},
    "cifar10_accuracy": ("CIFAR-10 test accuracy, offline images (fraction)", True, "human_alignment"),
    "cifar10h_kl": ("KL(CIFAR-10H ‖ model) (nats)", False, "human_alignment"),
    "cifar10h_kl_calibrated": ("temperature-scaled KL to CIFAR-10H (nats)", False, "human_alignment"),
    "cifar10h_entropy_spearman": ("Spearman ρ of per-image entropies with CIFAR-10H", True, "human_alignment"),
    "cifar10h_alignment": ("CIFAR-10H alignment, −ln calibrated KL on the inverted U's images", True, "inverted_u"),
    "nn_human_prob": ("human share of the nearest neighbour's class", True, "inverted_u"),
    "bapps": ("BAPPS 2AFC score, lpips_untrained (%)", True, "inverted_u"),
    "clickme": ("ClickMe alignment (serre-lab's measure)", True, "human_alignment"),
    "finetuned": ("fine-tuned transfer accuracy", True, "dataset_correlation"),
}
_IMAGENET_ONLY = ("shape_bias", "error_consistency", *(f"error_consistency_{d}" for d in data.STIMULUS_SETS),
                  *(f"probe_{d}" for d in dc.PROFILES[REFERENCE]["datasets"]))
_CIFAR10H = {"cifar10_accuracy": "accuracy", "cifar10h_kl": "kl", "cifar10h_kl_calibrated": "kl_calibrated",
             "cifar10h_entropy_spearman": "entropy_spearman"}  # measure: key of observers.cifar10h_alignment
_CIFAR_ONLY = (*_CIFAR10H, "cifar10h_alignment", "nn_human_prob")
NEEDS = {
    "bapps": "needs the BAPPS 2AFC val set: pass --bapps DIR (tradeoffs.data.download_bapps(DIR) fetches it online)",
    "clickme": "needs the ClickMe maps (online only; the human-alignment chapter's full profile scores them)",
    "finetuned": "needs fine-tuning on a GPU (the dataset-correlation chapter's full profile)",
    "imagenet_only": "not applicable: needs the 1000 ImageNet outputs (the 16-class decision and the probes' "
                     "ImageNet features)",
    "cifar_only": "not applicable: needs a CIFAR-10 classifier (10-way distributions compared with CIFAR-10H's)",
}


def settings(profile: str) -> dict[str, Any]:
    """Sizes of a profile, taken from the chapters whose measures are computed (so values compare with theirs)."""
    if profile not in SCORE_PROFILES:
        raise TradeoffsError(f"unknown profile {profile!r} for scoring; use one of {', '.join(SCORE_PROFILES)}.")
    hap, dcp, iup = (m.PROFILES[profile] for m in (ha, dc, iu))
    return {"n_images": dict(hap["n_images"]), "n_cifar": hap["n_cifar"], "n_eval": iup["n_eval"],
            **{k: dcp[k] for k in ("n_train", "n_val", "n_test", "datasets", "Cs")}}


def result_name(model: str, profile: str) -> str:
    """`score_model_<model>_<profile>` (characters other than letters, digits, `_.-` become `-`)."""
    return claims.result_name(NOTEBOOK, re.sub(r"[^A-Za-z0-9_.-]+", "-", model), profile)


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Candidate:
    """The model to score, what kind it is and its accuracy (NaN when unknown) with where that number comes from."""

    model: models.Model
    kind: str  # IMAGENET or CIFAR10
    top1: float
    top1_source: str


def candidate(name: str, *, weights: str | None = None, arch: str | None = None, top1: float | None = None,
              input_size: int | None = None) -> Candidate:
    """Load and check the model: a clear TradeoffsError for an unknown name, unreachable hub weights, a checkpoint
    that does not fit its architecture, a model without an ImageNet (or CIFAR-10) head, or an input size it cannot
    take. Nothing is computed or written before these checks pass."""
    if weights is None:
        if arch is not None:
            raise TradeoffsError("--arch names the architecture of a checkpoint: give the checkpoint with --weights.")
        model = _pretrained(name)
    else:
        model = _checkpoint(name, Path(weights), arch or name)
    if input_size is not None:
        model = dataclasses.replace(model, preprocess=dataclasses.replace(model.preprocess,
                                                                          input_size=(input_size, input_size)))
    kind = _kind(model, _outputs(model))
    if top1 is not None:
        return Candidate(model, kind, float(top1), "given by the user (--top1)")
    if model.meta.top1 is not None:
        return Candidate(model, kind, float(model.meta.top1), "published (the model catalogue, `models.load`, says "
                         "where from in the model's source and notes)")
    return Candidate(model, kind, math.nan, "unknown: not in timm's results table and not given (pass --top1)")


def _pretrained(name: str) -> models.Model:
    try:
        return models.load(name)
    except TradeoffsError as err:
        if name in models.named_models():
            raise
        raise TradeoffsError(f"cannot score {name}: {err} Offline, score one of the offline models "
                             f"({', '.join(models.named_models())}) or a local checkpoint "
                             "(--weights PATH --arch NAME).") from err


def _checkpoint(name: str, path: Path, arch: str) -> models.Model:
    """A local checkpoint in `arch`, after checking that it carries a classifier of the architecture's width."""
    if not path.is_file():
        raise TradeoffsError(f"no checkpoint file {path}.")
    if arch in models.named_models() and not arch.startswith("cifar10_resnet"):
        raise TradeoffsError(f"--arch {arch} is an offline model with fixed weights; name a timm architecture "
                             "(e.g. resnet50) or a CIFAR ResNet (e.g. cifar10_resnet20) for a checkpoint.")
    empty = models.load(arch, weights="random")  # raises on an unknown architecture, with close names
    _check_head(empty.module, models._read_state_dict(path), path, arch)
    loaded = models.load(arch, weights=str(path))
    return dataclasses.replace(loaded, name=name, meta=dataclasses.replace(loaded.meta, name=name))


def _check_head(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str) -> None:
    get = getattr(module, "get_classifier", None)
    head = get() if get else None
    if head is None or not list(head.parameters()):
        return
    prefix = next(n for n, m in module.named_modules() if m is head)
    weight, own = f"{prefix}.weight", module.state_dict()
    missing = {k for k in own if k not in state and not k.endswith("num_batches_tracked")}
    if missing and missing <= {f"{prefix}.{k}" for k in head.state_dict()}:  # everything but the classifier fits
        raise TradeoffsError(f"{path} has no classifier ({weight} is missing): a feature extractor without an "
                             f"ImageNet head. Shape bias, error consistency and top-1 need {arch}'s 1000 ImageNet "
                             "outputs; save the whole model's state_dict.")
    if weight in state and state[weight].shape[0] != own[weight].shape[0]:
        raise TradeoffsError(f"{path}'s head has {state[weight].shape[0]} outputs, not ImageNet's "
                             f"{own[weight].shape[0]}: a model fine-tuned for another task has no ImageNet head to "
                             "score.")


def _outputs(model: models.Model) -> int:
    """The width of the model's output for one grey image at its input size; a clear error if it cannot run it."""
    h, w = model.preprocess.input_size
    try:
        with torch.inference_mode():
            out = model.module(model.preprocess(torch.full((1, 3, h, w), 0.5)))
    except Exception as err:  # any failure of an arbitrary network on this input is the user's to see, in one line
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise TradeoffsError(f"{model.name} cannot take {h}×{w} inputs ({type(err).__name__}: {reason}); use its "
                             "own input size (leave out --input-size) or one its architecture accepts.") from None
    return int(out.shape[-1])


def _kind(model: models.Model, width: int) -> str:
    if model.meta.top1_dataset == models.CIFAR10_TEST and width == 10:
        return CIFAR10
    if width != 1000:
        raise TradeoffsError(f"{model.name} has no ImageNet head: it gives {width} outputs, not 1000. Shape bias, "
                             "error consistency and top-1 need ImageNet-1k logits.")
    return IMAGENET


# ---------------------------------------------------------------- model-vs-human raw-data format

def mvh_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials (`data.TRIAL_COLUMNS`) in model-vs-human's raw-data columns (`MVH_COLUMNS`), one session."""
    return pd.DataFrame({"subj": trials["observer"], "session": 1, "trial": trials["trial"], "rt": trials["rt"],
                         "object_response": trials["response"], "category": trials["category"],
                         "condition": trials["condition"], "imagename": trials["image"]})[list(MVH_COLUMNS)]


def write_mvh_csv(trials: pd.DataFrame, folder: str | Path) -> list[Path]:
    """One `<dataset>_<model>_session-1.csv` per dataset and observer, written atomically; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for (dataset, observer), part in trials.groupby(["dataset", "observer"], sort=False):
        path = folder / f"{dataset}_{re.sub(r'[^A-Za-z0-9_.-]+', '-', str(observer))}_session-1.csv"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        mvh_frame(part).to_csv(tmp, index=False, na_rep="NaN")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def read_mvh_csv(path: str | Path) -> pd.DataFrame:
    """A model-vs-human per-model trial file (`<dataset>_<model>_session-1.csv`) as trials (`data.TRIAL_COLUMNS`)."""
    path = Path(path)
    match = MVH_FILE.fullmatch(path.name)
    if match is None:
        raise TradeoffsError(f"{path.name} is not named like model-vs-human's model files "
                             "(<dataset>_<model>_session-1.csv).")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MVH_COLUMNS if c not in raw.columns]
    if missing:
        raise TradeoffsError(f"{path} lacks the model-vs-human column(s) {missing}.")
    image = data.short_image_id(raw["imagename"])
    dataset = match["dataset"]
    return pd.DataFrame({
        "dataset": dataset, "observer": raw["subj"], "condition": raw["condition"], "image": image,
        "category": raw["category"], "texture": data.cue_conflict_texture(image) if dataset == "cue-conflict" else "",
        "response": raw["object_response"], "rt": pd.to_numeric(raw["rt"], errors="coerce"),
        "trial": raw["trial"].astype(np.int64)}, columns=list(data.TRIAL_COLUMNS))


def read_mvh_folder(folder: str | Path) -> pd.DataFrame:
    """Every `*_session-1.csv` model file of a folder (e.g. model-vs-human's raw-data/<dataset>/), as trials."""
    paths = sorted(Path(folder).glob("*_session-1.csv"))
    if not paths:
        raise TradeoffsError(f"no model-vs-human model files (*_session-1.csv) in {folder}.")
    return pd.concat([read_mvh_csv(p) for p in paths], ignore_index=True)


# ---------------------------------------------------------------- scoring

def score(name: str, *, profile: str = REFERENCE, weights: str | None = None, arch: str | None = None,
          top1: float | None = None, input_size: int | None = None, bapps: str | None = None,
          mvh: str | None = None, device: str = "auto", seed: int = 0, progress: bool = True) -> xr.Dataset:
    """Every measure that applies to the model, ranked among the references; stored (reused when its inputs,
    the model's weights and the code are unchanged) as `score_model_<model>_<profile>.nc`."""
    P = settings(profile)
    c = candidate(name, weights=weights, arch=arch, top1=top1, input_size=input_size)
    if bapps is not None and not (Path(bapps) / "2afc" / "val").is_dir():
        raise TradeoffsError(f"no BAPPS 2AFC val set under {bapps}/2afc/val; get it with "
                             f"tradeoffs.data.download_bapps({str(bapps)!r}).")
    published = _published(mvh) if mvh is not None else None
    parameters = {"model": name, "weights": weights or "pretrained", "arch": arch, "top1": top1,
                  "input_size": input_size, "bapps": bapps, "mvh": mvh, "seed": seed, "device": device, **P}
    key = results.content_key("score-v1", features.weights_key(c.model), c.top1, P, bapps, seed,
                              None if published is None else published["shape_bias"].values.tolist(),
                              [store.load(n).attrs.get("inputs_key", "") for n in _reference_files()],
                              observers, metrics, probes, perceptual, sys.modules[__name__])
    return store.load_or_compute(result_name(name, profile), key,
                                 lambda: _compute(c, P, bapps, published, device, seed, progress),
                                 profile=profile, parameters=parameters, tolerance={"rtol": 1e-6, "atol": 1e-6})


def _reference_files() -> list[str]:
    names = [claims.result_name(*parts, REFERENCE) for parts in (
        ("human_alignment", "observers"), ("human_alignment", "cifar10h"), ("dataset_correlation", "probes"),
        ("inverted_u", "cifar"), ("early_stopping", ""))]
    return [n for n in names if (results.results_dir() / f"{n}.nc").is_file()]


def _compute(c: Candidate, P: Mapping[str, Any], bapps: str | None, published: xr.Dataset | None, device: str,
             seed: int, progress: bool) -> xr.Dataset:
    cpu = time.process_time()
    values: dict[str, float] = {"top1": c.top1}
    trials = None
    if c.kind == IMAGENET:
        trials, table = _psychophysics(c.model, P, device, seed, progress)
        values.update(shape_bias=float(table["shape_bias"]),
                      error_consistency=float(table["error_consistency_mean"].mean("dataset")),
                      **{f"error_consistency_{d}": float(table["error_consistency_mean"].sel(dataset=d))
                         for d in table["dataset"].values})
        values.update(_probes(c.model, P, device, seed, progress))
    else:
        values.update(_cifar10h(c.model, P, device, seed, progress))
    if bapps is not None:
        scores = perceptual.bapps_2afc(c.model, bapps, device=device, progress=progress)["score"]
        values["bapps"] = 100 * float(scores.sel(distance="lpips_untrained", subset="overall"))
    return _dataset(c, values, trials, published).assign_attrs(cpu_s=time.process_time() - cpu)


def _psychophysics(model: models.Model, P: Mapping[str, Any], device: str, seed: int,
                   progress: bool) -> tuple[pd.DataFrame, xr.Dataset]:
    """The model's trials on the three stimulus sets and its row of `observers.observer_table` among people."""
    human = data.human_trials(list(data.STIMULUS_SETS))
    trials = pd.concat([observers.model_trials(model, d, human, n_images=P["n_images"].get(d), seed=seed,
                                               device=device, progress=progress) for d in data.STIMULUS_SETS],
                       ignore_index=True)
    table = observers.observer_table(pd.concat([observers.restrict(human, trials), trials], ignore_index=True))
    return trials, table.sel(observer=model.name)


def _probes(model: models.Model, P: Mapping[str, Any], device: str, seed: int, progress: bool) -> dict[str, float]:
    out = {}
    for d in P["datasets"]:
        splits = probes.transfer_splits(d, P["n_train"], P["n_val"], P["n_test"], seed)
        out[f"probe_{d}"] = probes.linear_probe(model, splits, Cs=P["Cs"], device=device, progress=progress)[0].accuracy
    return out


def _cifar10h(model: models.Model, P: Mapping[str, Any], device: str, seed: int, progress: bool) -> dict[str, float]:
    """The human-alignment chapter's CIFAR-10H measure and the inverted U's (first n_eval test images)."""
    alignment = observers.cifar10h_alignment(model, n_images=P["n_cifar"], seed=seed, device=device,
                                             progress=progress)
    test_set, human_probs = iu.cifar_test()
    n = P["n_eval"]
    inverted = perceptual.cifar10h_measures(model, test_set["images"].values[:n], test_set["labels"].values[:n],
                                            human_probs[:n], n_reference=n // 2, device=device, progress=progress)
    return {**{measure: alignment[key] for measure, key in _CIFAR10H.items()},
            "cifar10h_alignment": -math.log(inverted["kl_calibrated"]), "nn_human_prob": inverted["nn_human_prob"],
            "inverted_u_accuracy": inverted["accuracy"]}


def _status(measure: str, kind: str, value: float) -> str:
    if measure in ("clickme", "finetuned"):
        return NEEDS[measure]
    if measure in _IMAGENET_ONLY and kind != IMAGENET:
        return NEEDS["imagenet_only"]
    if measure in _CIFAR_ONLY and kind != CIFAR10:
        return NEEDS["cifar_only"]
    if measure == "bapps" and not math.isfinite(value):
        return NEEDS["bapps"]
    if measure == "top1" and not math.isfinite(value):
        return "unknown: not in timm's results table and not given (pass --top1)"
    return "measured" if math.isfinite(value) else "not defined for this model (no shape or texture decision)"


def _dataset(c: Candidate, values: Mapping[str, float], trials: pd.DataFrame | None,
             published: xr.Dataset | None) -> xr.Dataset:
    ids = list(MEASURES)
    value = [float(values.get(m, math.nan)) for m in ids]
    label = [MEASURES[m][0] if (m != "top1" or c.kind == IMAGENET) else "published CIFAR-10 test accuracy (%)"
             for m in ids]
    ds = xr.Dataset({"value": ("measure", value), "label": ("measure", label),
                     "status": ("measure", [_status(m, c.kind, v) for m, v in zip(ids, value)]),
                     "claims": ("measure", [MEASURES[m][2] for m in ids])}, coords={"measure": ids})
    ranks = pd.DataFrame(_ranks(c, values, published))
    if len(ranks):
        ds = ds.merge(xr.Dataset.from_dataframe(ranks.rename_axis("comparison")))
    if trials is not None:
        ds = ds.merge(observers.trials_to_dataset(trials).rename(observer="scored"))
    if "inverted_u_accuracy" in values:
        ds["inverted_u_accuracy"] = values["inverted_u_accuracy"]
    meta = c.model.meta
    return ds.assign_attrs(model=meta.name, kind=c.kind, source=meta.source, notes=meta.notes, licence=meta.licence,
                           top1_source=c.top1_source, input_size=str(tuple(c.model.preprocess.input_size)),
                           num_params=meta.num_params, reference_profile=REFERENCE)


# ---------------------------------------------------------------- references and ranks

def stored(name: str) -> xr.Dataset | None:
    """A stored results file, or None when there is none (a reference not computed yet)."""
    try:
        return store.load(name)
    except TradeoffsError:
        return None


def _project_observers() -> xr.Dataset | None:
    """The human-alignment chapter's pretrained ImageNet models (stored observer table), or None."""
    obs = stored(claims.result_name("human_alignment", "observers", REFERENCE))
    if obs is None:
        return None
    keep = ((obs["kind"] == "model") & (obs["weights"] == "pretrained")).values
    return obs.sel(observer=keep)


def _project_probes() -> xr.Dataset | None:
    pr = stored(claims.result_name("dataset_correlation", "probes", REFERENCE))
    return None if pr is None else pr.sel(model=(pr["weights"] == "pretrained").values)


def _published(folder: str) -> xr.Dataset:
    """Shape bias and error consistency of the models in a folder of model-vs-human model files (all stimuli)."""
    theirs = read_mvh_folder(folder)
    theirs = theirs[theirs["dataset"].isin(data.STIMULUS_SETS)]
    if theirs.empty:
        raise TradeoffsError(f"{folder} holds no model file of {', '.join(data.STIMULUS_SETS)}.")
    human = data.human_trials(sorted(theirs["dataset"].unique()))
    table = observers.observer_table(pd.concat([observers.restrict(human, theirs), theirs], ignore_index=True))
    return table.sel(observer=(table["kind"] == "model").values)


def _references(c: Candidate, published: xr.Dataset | None) -> Iterable[tuple[str, str, pd.Series]]:
    """(measure, reference set, values by model) for every comparison that has stored or published values."""
    obs, pr = _project_observers(), _project_probes()
    if c.kind == IMAGENET:
        if obs is not None:
            yield "top1", "the project's offline ImageNet models", obs["top1"].to_pandas()
        timm = data.table("timm/results-imagenet").drop_duplicates("model")
        yield "top1", "timm's results table (best evaluated size per model)", timm.set_index("model")["top1"]
        serre = data.table("serre_lab/onevision_model_type_reference")
        yield "top1", "the serre-lab ClickMe table (its models' top-1)", serre.set_index("model")["imgnet_acc"]
        if obs is not None:
            yield "shape_bias", "the project's offline ImageNet models", obs["shape_bias"].to_pandas()
            ec = obs["error_consistency_mean"]
            yield "error_consistency", "the project's offline ImageNet models", ec.mean("dataset").to_pandas()
            for d in ec["dataset"].values:
                yield f"error_consistency_{d}", "the project's offline ImageNet models", ec.sel(dataset=d).to_pandas()
        if published is not None:
            name = "model-vs-human's published model trials"
            yield "shape_bias", name, published["shape_bias"].to_pandas()
            yield "error_consistency", name, published["error_consistency_mean"].mean("dataset").to_pandas()
        if pr is not None:
            for d in pr["dataset"].values:
                yield f"probe_{d}", "the project's offline ImageNet models", pr["accuracy"].sel(dataset=d).to_pandas()
        return
    cifar = stored(claims.result_name("human_alignment", "cifar10h", REFERENCE))
    if cifar is not None:
        for m, k in _CIFAR10H.items():
            yield m, "the project's pretrained CIFAR-10 ResNets", cifar[k].to_pandas()
        yield "top1", "the project's pretrained CIFAR-10 ResNets", cifar["published_accuracy"].to_pandas()
    points = _cifar_points()
    if points is not None:
        for m, column in (("cifar10h_alignment", "alignment"), ("nn_human_prob", "nn_human_prob")):
            yield m, "the inverted U's CIFAR-10 points (pretrained ResNets and training checkpoints)", \
                points.set_index("unit")[column]


def _cifar_points() -> pd.DataFrame | None:
    cifar = stored(claims.result_name("inverted_u", "cifar", REFERENCE))
    if cifar is None:
        return None
    return iu.cifar_points(cifar, iu.load_early(iu.settings(REFERENCE, {}), REFERENCE)[0])


def rank(value: float, reference: Iterable[float], higher_is_better: bool = True) -> tuple[int, float]:
    """Rank among the finite reference values (1 = highest, or lowest when lower is better) and percentile (the
    percentage of references the value beats, ties counted half)."""
    ref = np.asarray([v for v in reference if np.isfinite(v)], float)
    sign = 1 if higher_is_better else -1
    beaten, ties = int((sign * ref < sign * value).sum()), int((ref == value).sum())
    return int((sign * ref > sign * value).sum()) + 1, 100 * (beaten + ties / 2) / len(ref) if len(ref) else math.nan


def _ranks(c: Candidate, values: Mapping[str, float], published: xr.Dataset | None) -> list[dict[str, Any]]:
    rows = []
    for measure, reference, ref in _references(c, published):
        value = values.get(measure, math.nan)
        ref = ref[ref.index.astype(str) != c.model.name].dropna()  # the model itself is not its own reference
        if not (math.isfinite(value) and len(ref)):
            continue
        position, percentile = rank(value, ref.to_numpy(float), MEASURES[measure][1])
        rows.append({"comparison_measure": measure, "reference": reference, "n_reference": len(ref),
                     "rank": position, "percentile": percentile, "reference_min": float(ref.min()),
                     "reference_max": float(ref.max())})
    return rows


def trials(ds: xr.Dataset) -> pd.DataFrame:
    """The model's stored trials (`data.TRIAL_COLUMNS`); empty for a CIFAR-10 model."""
    if "scored" not in ds.dims:
        return pd.DataFrame(columns=list(data.TRIAL_COLUMNS))
    return observers.dataset_to_trials(ds[["response"]].rename(scored="observer"))
