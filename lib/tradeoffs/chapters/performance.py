"""The Performance chapter: the stored feature-extraction benchmarks as ratios and targets, timm's RTX 4090 table as
context, and an estimate of what each claim notebook's `full` profile costs on a Colab GPU."""

from __future__ import annotations

import importlib
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import xarray as xr

from .. import anynet, bench, claims, features, registry, results, store
from ..errors import TradeoffsError
from . import settings as _settings

TINY = bench.Plan((bench.Case("test_resnet", "random", 32, 16, 8), bench.Case("test_vit", "random", 160, 8, 8)),
                  repeats=3, warmup=1, memory_model="test_resnet", memory_size=32, memory_images=(100, 1000))
PROFILES = {
    "smoke": dict(source="run", plan="tiny", scale=1, threads=1),  # a tiny random model, seconds
    "default": dict(source="stored", plan="full", scale=1, threads=1),  # data/benchmarks/*.nc as measured
    "full": dict(source="run", plan="full", scale=1, threads=1),  # the whole benchmark on this machine
}
TIMM_TABLE = "tables/timm/benchmark-infer-amp-nchw-pt291-cu128-4090.csv"


def settings(profile: str, given: dict[str, Any]) -> dict[str, Any]:
    """The profile's settings with the notebook's parameters laid over them."""
    return _settings(PROFILES, profile, given)


# ---------------------------------------------------------------- the benchmarks

def runs(p: dict[str, Any], profile: str) -> dict[str, xr.Dataset]:
    """Benchmark results by device label: run here (smoke, full) or the files stored in data/benchmarks (default)."""
    if p["source"] == "run":
        dev = "cuda" if p["device"] == "auto" and torch.cuda.is_available() else (
            "cpu" if p["device"] == "auto" else p["device"])
        torch.set_num_threads(p["threads"] if dev == "cpu" else torch.get_num_threads())
        plan = bench.scaled(TINY if p["plan"] == "tiny" else bench.FULL, p["scale"])
        key = results.content_key(dev, torch.get_num_threads(), str(plan), bench)
        ds = store.load_or_compute(claims.result_name("performance", "bench", profile), key,
                                     lambda: bench.run(dev, plan, note=f"performance notebook, {profile}"),
                                     profile=profile, parameters={**p, "plan": str(plan)},
                                     tolerance={"rtol": 1.0, "atol": 0.0})
        return {"this machine": ds}
    found = _stored(quick=False)
    if not found:
        raise TradeoffsError("no data/benchmarks/<device>.nc found: run `python -m tradeoffs.bench` in the project "
                             "checkout, or use profile='full'")
    return found


def quick_runs(p: dict[str, Any]) -> dict[str, xr.Dataset]:
    """The stored `python -m tradeoffs.bench --quick` results by device (default profile; none when run here)."""
    return _stored(quick=True) if p["source"] == "stored" else {}


def _stored(quick: bool) -> dict[str, xr.Dataset]:
    root = results.repo_root()
    paths = sorted((root / "data" / "benchmarks").glob("*.nc")) if root else []
    found = {}
    for path in (f for f in paths if f.stem.endswith("_quick") == quick):
        with xr.open_dataset(path) as f:
            found[path.stem.removesuffix("_quick")] = f.load()
    return found


def describe(runs_: dict[str, xr.Dataset]) -> str:
    """One line per benchmark: device, versions, threads, machine load around it."""
    lines = [f"`{label}`: {ds.attrs['device_name']}; torch {ds.attrs['torch_version']}, timm "
             f"{ds.attrs['timm_version']}, {ds.attrs['threads']} thread(s); load average "
             f"{ds.attrs['load_average_before']} before, {ds.attrs['load_average_after']} after; "
             f"{ds.attrs.get('note', '')}" for label, ds in runs_.items()]
    gpu = any("cuda" in label or "cpu" not in str(ds.attrs["device_name"]) for label, ds in runs_.items())
    return "\n\n".join(lines) + ("" if gpu else "\n\nNo GPU benchmark is stored yet: GPU results are not measured.")


def ratios(runs_: dict[str, xr.Dataset]) -> pd.DataFrame:
    """Each variant's images/s over the plain forward pass of the same round, plus extraction over hooks."""
    tables = []
    for label, ds in runs_.items():
        s = ds.images_per_s
        eh = (s.sel(variant="extract") / s.sel(variant="hooks")).transpose("case", "repeat").values
        extra = pd.DataFrame({"case": ds.case.values, "variant": "extract / hooks", "ratio": np.nanmedian(eh, axis=1),
                              "low": np.nanmin(eh, axis=1), "high": np.nanmax(eh, axis=1)})
        tables.append(pd.concat([bench.summary(ds), extra], ignore_index=True).assign(device=label))
    return pd.concat(tables, ignore_index=True)


def fractions(runs_: dict[str, xr.Dataset]) -> pd.DataFrame:
    """A cached rerun's time as a fraction of the first run's, per case and device."""
    return pd.concat([bench.cached_fraction(ds).rename_axis("case").reset_index().assign(device=label)
                      for label, ds in runs_.items()], ignore_index=True)


def memory(runs_: dict[str, xr.Dataset]) -> pd.DataFrame:
    """Peak memory and the size of the features returned, per image count and device."""
    return pd.concat([pd.DataFrame({"images": ds.n_images.values, "peak (MiB)": ds.peak_memory_mib.values,
                                    "features returned (MiB)": ds.output_mib.values, "device": label})
                      for label, ds in runs_.items()], ignore_index=True)


def ratio_table(ratios_: pd.DataFrame) -> pd.DataFrame:
    """One row per device and case: the ratios shown in the text, and the plain forward throughput."""
    short = {"extract": "extract (×)", "hooks": "hooks (×)", "extract / hooks": "extract / hooks",
             "extract_first_cached": "first cached (×)", "extract_cached_rerun": "cached rerun (×)",
             "plain forward (images/s)": "plain (img/s)"}
    wide = ratios_.pivot_table(index=["device", "case"], columns="variant", values="ratio", sort=False)
    wide["plain forward (images/s)"] = ratios_.groupby(["device", "case"], sort=False).plain_images_per_s.first()
    table = wide[list(short)].rename(columns=short).round(2)
    return table.droplevel("device") if ratios_.device.nunique() == 1 else table


def throughput_figure(ratios_: pd.DataFrame, fractions_: pd.DataFrame) -> plt.Figure:
    """Throughput relative to the plain forward pass (spread over rounds), and the cached rerun's share of time."""
    shown = ratios_[ratios_.variant.isin(["extract", "extract_first_cached", "hooks", "plain_forward_fp32",
                                          "plain_forward_nchw"])]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    cases, variants = list(dict.fromkeys(shown.case)), list(dict.fromkeys(shown.variant))
    sns.barplot(shown, y="case", x="ratio", hue="variant", order=cases, hue_order=variants, ax=ax, errorbar=None)
    spread = shown.groupby(["variant", "case"])[["low", "high"]].max()  # one device per case label
    for bars, variant in zip(ax.containers, variants):
        for bar, case in zip(bars, cases):
            if (variant, case) in spread.index:
                y = bar.get_y() + bar.get_height() / 2
                ax.plot(spread.loc[(variant, case)].values, [y, y], color="black", lw=1)
    ax.axvline(1.0, color="grey", lw=1)
    ax.axvline(0.9, color="black", ls="--", lw=1, label="target 0.9×")
    ax.set(xlabel="images/s relative to the plain forward pass (×)", ylabel="", title="Throughput vs plain forward")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, frameon=False)
    sns.barplot(fractions_, y="case", x=fractions_.cached_rerun_fraction * 100, hue="device", ax=bx,
                legend=fractions_.device.nunique() > 1)
    bx.axvline(5, color="black", ls="--", lw=1)
    bx.set(xlabel="cached rerun, % of the first run's time", ylabel="", yticklabels=[],
           title="Cached rerun (target ≤ 5%)")
    fig.tight_layout()
    return fig


def memory_figure(memory_: pd.DataFrame) -> plt.Figure:
    """Peak memory split into the features returned and everything else."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    m = memory_.assign(other=memory_["peak (MiB)"] - memory_["features returned (MiB)"])
    labels = [f"{d}\n{int(n):,} images" for d, n in zip(m.device, m.images)]
    ax.bar(labels, m["features returned (MiB)"], label="features returned")
    ax.bar(labels, m.other, bottom=m["features returned (MiB)"], label="everything else")
    ax.set(ylabel="peak memory above model and inputs (MiB)", title="Peak memory while extracting pooled features")
    ax.legend()
    return fig


_WHY = {
    "extraction": "on a CPU the forward pass itself is nearly all the cost, so extraction can at best match it; "
                  "the rest is copying unpooled feature maps out of each batch into freshly allocated memory (megabytes "
                  "per image at 224 px, where the plain pass keeps nothing) and checking them for NaN, and the rounds "
                  "spread when other jobs share the machine",
    "hooks": "on a CPU a hook only keeps a reference to a tensor already in memory, so hooks cost almost nothing "
             "and extraction cannot be faster; the gap the target assumes comes from device-to-host copies on a GPU",
    "cache": "reading the cached features costs more than hashing the images and weights for this run's sizes",
    "first_cached": "on top of the extraction, the chunk written to the cache (unpooled feature maps) is hashed "
                    "with its inputs and copied once, so that the caller may change its arrays; the write itself runs "
                    "on a background thread, outside the timed call, overlapping the next chunk in real use",
}


def _worst(ratios_: pd.DataFrame, variant: str) -> tuple[float, str]:
    """The lowest median ratio of a variant, and a label with its spread over rounds and its case."""
    part = ratios_[ratios_.variant == variant]
    row = part.loc[part.ratio.idxmin()]
    return float(row.ratio), f"[{row.low:.2f}–{row.high:.2f}] over rounds; {row.case} ({row.device})"


def _measured(ratios_: pd.DataFrame, fractions_: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """Worst case of each throughput target: (value, label)."""
    c_row = fractions_.loc[fractions_.cached_rerun_fraction.idxmax()]
    return {"extraction": _worst(ratios_, "extract"), "hooks": _worst(ratios_, "extract / hooks"),
            "first_cached": _worst(ratios_, "extract_first_cached"),
            "cache": (float(c_row.cached_rerun_fraction), f"({c_row.case}, {c_row.device})")}


_TARGETS = {"extraction": ("extraction ≥ 0.9× plain forward", lambda v: v >= 0.9),
            "hooks": ("extraction ≥ 1.5× hooks", lambda v: v >= 1.5),
            "first_cached": ("first cached run ≥ 0.9× plain forward", lambda v: v >= 0.9),
            "cache": ("cached rerun ≤ 5% of first", lambda v: v <= 0.05)}


def _show(what: str, value: float, label: str) -> str:
    return f"{value:.1%} {label}" if what == "cache" else f"{value:.2f}× {label}"


def targets(runs_: dict[str, xr.Dataset], ratios_: pd.DataFrame, fractions_: pd.DataFrame,
            quick: dict[str, xr.Dataset] | None = None) -> pd.DataFrame:
    """The project's performance targets, each with its worst measured case, met or not, and why not; with `quick`
    (the stored `--quick` benchmarks), also their worst case and status."""
    measured = _measured(ratios_, fractions_)
    fast = _measured(ratios(quick), fractions(quick)) if quick else {}
    rows = []
    for what, (target, ok) in _TARGETS.items():
        value, label = measured[what]
        row = {"target": target, "measured (worst case)": _show(what, value, label),
               "status": "met" if ok(value) else "not met"}
        if fast:
            q, q_label = fast[what]
            row["--quick (worst case)"] = f"{_show(what, q, q_label)}: {'met' if ok(q) else 'not met'}"
        rows.append({**row, "why not met": "" if ok(value) and (not fast or ok(fast[what][0])) else _WHY[what]})
    growth = []  # the 10× step (first two image counts); a third count, if measured, shows whether growth goes on
    for label, ds in runs_.items():
        rest = (ds.peak_memory_mib - ds.output_mib).values
        later = float(rest[-1] / rest[1]) if len(rest) > 2 else float("nan")
        growth.append((float(rest[1] / rest[0]), float(ds.peak_memory_mib[1] / ds.peak_memory_mib[0]), later, label))
    g, g_all, g_later, g_label = max(growth)
    n0, n1, *n_more = (int(v) for v in next(iter(runs_.values())).n_images.values)
    why_memory = ("every batch is written straight into one output array per layer, so the growth is not copies of "
                  "the features: it is the C allocator keeping freed batch buffers for reuse while the first chunks "
                  f"of {features.CHUNK:,} images run" + (f"; from {n1:,} to {n_more[-1]:,} images the peak without "
                                                          f"the features returned changes by {g_later:.2f}×"
                                                          if n_more else ""))
    rows.append({"target": f"flat memory, {n0:,} → {n1:,} images",
                 "measured (worst case)": f"{g:.2f}× without the features returned, {g_all:.2f}× in all ({g_label})",
                 "status": "met" if g <= 1.25 else "not met", "why not met": "" if g <= 1.25 else why_memory})
    return pd.DataFrame(rows).fillna("")


def timm_context(runs_: dict[str, xr.Dataset]) -> pd.DataFrame:
    """Plain forward throughput here beside timm's RTX 4090 AMP benchmark, for the cases timm's table holds."""
    table = pd.read_csv(registry.fetch(TIMM_TABLE))
    here = pd.concat([bench.summary(ds).query("variant == 'plain_forward'").assign(
        device=label, model=ds.model.values, size=ds["size"].values) for label, ds in runs_.items()])
    both = here.merge(table, left_on=["model", "size"], right_on=["model", "infer_img_size"], how="inner")
    both = both.assign(**{"images/s here": both.plain_images_per_s.round(1),
                          "images/s RTX 4090 (timm)": both.infer_samples_per_sec.round(0),
                          "4090 / here (×)": (both.infer_samples_per_sec / both.plain_images_per_s).round(0)})
    return both[["case", "device", "images/s here", "images/s RTX 4090 (timm)", "4090 / here (×)"]]


# ---------------------------------------------------------------- what a Colab run costs (an estimate)

SPECS = {  # dense FP16 tensor TFLOPS, memory bandwidth GB/s, memory GB (NVIDIA datasheets / Ada whitepaper)
    "RTX 4090": (165.2, 1008, 24), "T4": (65.0, 320, 16), "A100 40GB": (312.0, 1555, 40)}
RATIO = {d: min(f / SPECS["RTX 4090"][0], b / SPECS["RTX 4090"][1]) for d, (f, b, _) in SPECS.items()}
BATCH, CIFAR_TEST = 64, 10_000
BAPPS_TRIPLETS = 36_344  # BAPPS 2AFC val, six subsets (sizes listed in the LPIPS README; assumed, not counted here)
ESTIMATED = ("early_stopping", "human_alignment", "inverted_u", "dataset_correlation", "anynetx_subsets")
OVERRIDES = {"anynetx_subsets": {"source": "folder:ILSVRC2012/train"}}  # the user's ImageNet folder; only its size counts
CLASSES = {"cifar10": 10, "fashion_mnist": 10, "digits": 10}  # classes of the sweep's fixed data sets


def _mvh_images() -> int:
    """Model-vs-human stimuli listed in the registry."""
    return sum(e.path.startswith("model-vs-human/stimuli/") and e.path.endswith((".png", ".jpg", ".JPEG"))
               for e in registry.entries())


def full_settings(name: str) -> dict[str, Any]:
    """A chapter's resolved settings on the `full` profile (with the overrides an estimate needs)."""
    chapter = importlib.import_module(f"{__package__}.{name}")
    return chapter.settings("full", {"seed": 0, **OVERRIDES.get(name, {})})


def _workload(name: str, p: dict, designs: dict[str, anynet.Design], mvh: int) -> list[tuple[str, int | None, float, bool]]:
    """(network, input size or None for its own, images, training?) of one notebook's full profile."""
    if name == "early_stopping":
        runs_ = len(p["seeds"]) * p["epochs"]
        return [w for m in p["models"] for w in ((m, 32, runs_ * p["n_train"], True),
                                                  (m, 32, runs_ * p["n_eval"], False))]
    if name == "human_alignment":
        return ([(m, None, mvh, False) for m in [*p["models"], *p["random_models"], *p["timm_models"]]]
                + [(m, None, p["n_clickme"], True) for m in p["timm_models"]]
                + [(m, 32, p["n_cifar"] or CIFAR_TEST, False) for m in p["cifar_models"]])
    if name == "inverted_u":
        return ([(m, 32, p["n_eval"] + p["n_reference"] + p["n_query"], False) for m in p["cifar_models"]]
                + [(m, None, mvh, False) for m in p["imagenet_models"]]
                + [(m, 64, 3 * BAPPS_TRIPLETS, False) for m in p["bapps_models"]])
    if name == "dataset_correlation":
        n = len(p["datasets"])
        return ([(m, None, n * (p["n_train"] + p["n_val"] + p["n_test"]), False) for m in [*p["models"], *p["baselines"]]]
                + [w for m in p["finetune_models"] for w in ((m, None, n * p["epochs"] * p["n_train"], True),
                                                            (m, None, n * p["n_test"], False))])
    if name == "anynetx_subsets":  # every design (replicates again) trained and tested on every source subset and target
        space = anynet.Space(**p["space"])
        sampled = anynet.sample(p["n_architectures"], space, seed=p["seed"])
        designs.update({d.name: d for d in sampled})
        per_class = [(k, p["n_train"], p["n_test"]) for k in p["subsets"]]
        per_class += [(CLASSES[t], n_tr, n_te) for t, n_tr, n_te in p["targets"]]
        return [w for d in [*sampled, *sampled[:p["n_replicates"]]] for k, n_tr, n_te in per_class
                for w in ((d.name, space.size, p["epochs"] * k * n_tr, True), (d.name, space.size, k * n_te, False))]
    raise TradeoffsError(f"no workload description for notebook {name!r}; add it to _workload()")


def _counted(module: torch.nn.Module, size: int) -> tuple[float, float]:
    """(GFLOPs, activations) of one forward pass of a 1×3×size×size input."""
    from torch.utils.flop_counter import FlopCounterMode

    acts: list[int] = []
    hooks = [mod.register_forward_hook(lambda _m, _i, o: acts.append(o.numel())) for mod in module.modules()
             if not list(mod.children())]
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        module.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return fc.get_total_flops() / 1e9, float(sum(acts))


def _cost(name: str, size: int | None, table: pd.DataFrame, designs: dict[str, anynet.Design]
          ) -> tuple[float, float, float, bool]:
    """(images/s on the 4090, parameters, activations per image, runs on GPU) at input `size`."""
    from .. import models as zoo

    median_gmac_s = float((table.infer_samples_per_sec * table.infer_gmacs).median())
    if name in designs:  # AnyNetX: analytic multiply-adds (1000 classes); parameters and activations of the network
        net = anynet.AnyNet(designs[name], 1000)
        _, acts = _counted(net, size)
        gmacs = designs[name].macs(size, 1000) / 1e9
        return median_gmac_s / gmacs, float(sum(p.numel() for p in net.parameters())), acts, True
    arch = name.split(".")[0]
    arch = {f"efficientnet_lite{k}": f"tf_efficientnet_lite{k}" for k in range(3)}.get(arch, arch)
    rows = table[table.model == arch]
    if len(rows):
        row = rows.iloc[(rows.infer_img_size - (size or 224)).abs().argmin()]
        k = (row.infer_img_size / size) ** 2 if size else 1.0
        return row.infer_samples_per_sec * k, row.param_count * 1e6, row.infer_macts * 1e6 / k, True
    try:
        m = zoo.load(name, weights="random")
    except TradeoffsError:  # fixed graphs (TFLite) have no random init
        m = zoo.load(name)
    if not m.supports_device("cuda"):
        return np.nan, float(m.meta.num_params), np.nan, False
    gflops, acts = _counted(m.module, size or m.preprocess.input_size[0])
    return median_gmac_s / (gflops / 2), float(m.meta.num_params), acts, True


def _estimate(parameters: dict[str, dict[str, Any]]) -> xr.Dataset:
    table = pd.read_csv(registry.fetch(TIMM_TABLE))
    designs: dict[str, anynet.Design] = {}
    mvh = _mvh_images()
    rows = []
    for name, p in parameters.items():
        work = _workload(name, p, designs, mvh)
        costs = {(m, s): _cost(m, s, table, designs) for m, s, _, _ in work}
        gpu = [(w, costs[(m, s)], train) for m, s, w, train in work if costs[(m, s)][3]]
        seconds = sum(w * (3 if train else 1) / c[0] for w, c, train in gpu)
        mem = max((1e9 + 4 * c[1] * (4 if train else 1) + BATCH * c[2] * 2) for _, c, train in gpu)
        rows.append({"notebook": name, "gpu_images": sum(w * (3 if t else 1) for w, _, t in gpu),
                     "networks": len({m for m, *_ in work}),
                     "cpu_networks": len({m for m, s, *_ in work if not costs[(m, s)][3]}),
                     **{f"hours_{d}": seconds / RATIO[d] / 3600 for d in ("T4", "A100 40GB")},
                     "memory_gb": mem / 1e9})
    ds = xr.Dataset.from_dataframe(pd.DataFrame(rows).set_index("notebook"))
    ds.attrs.update(kind="estimate, not measured", formula="t_D = sum_m W_m / (S_m r_D)",
                    device_ratio=str({d: round(r, 3) for d, r in RATIO.items()}), mvh_images=mvh)
    return ds


def colab_estimate(profile: str) -> xr.Dataset:
    """Forward images, networks, hours on a T4 and an A100 and GPU memory of each claim notebook's `full` profile.

    Keyed on the `full` settings themselves, timm's table, the constants and this module, so it is recomputed when
    any of them changes and not when a notebook's prose does."""
    parameters = {name: full_settings(name) for name in ESTIMATED}
    key = results.content_key("colab-v2", parameters, registry.fetch(TIMM_TABLE), SPECS, BAPPS_TRIPLETS, BATCH,
                              _mvh_images(), importlib.import_module(__name__))
    return store.load_or_compute(claims.result_name("performance", "colab", profile), key,
                                   lambda: _estimate(parameters), profile=profile,
                                   parameters={"specs": SPECS, "batch": BATCH, "bapps_triplets": BAPPS_TRIPLETS})


def _hours(h: float) -> str:
    return "< 1 min" if h * 60 < 1 else (f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h")


def colab_table(est: xr.Dataset) -> pd.DataFrame:
    """The estimate as the page shows it."""
    df = est.to_dataframe()
    return pd.DataFrame({
        "GPU work (forward images)": [f"{v / 1e6:.2f} M" for v in df.gpu_images],
        "networks (CPU-only)": [f"{int(a)} ({int(b)})" for a, b in zip(df.networks, df.cpu_networks)],
        "T4 (estimate)": [_hours(v) for v in df["hours_T4"]],
        "A100 40GB (estimate)": [_hours(v) for v in df["hours_A100 40GB"]],
        "GPU memory (estimate)": [f"{v:.1f} GB" for v in df.memory_gb]}, index=df.index)


def colab_note(est: xr.Dataset, notebooks: list[str]) -> str:
    """What the table leaves out (of the `notebooks` named) and the factors it used."""
    others = sorted(set(notebooks) - set(ESTIMATED) - {"performance"})
    return ((f"Not estimated: {', '.join(others)} (no workload description yet). " if others else "")
            + f"Device factors relative to the RTX 4090: T4 {RATIO['T4']:.2f}, A100 40GB {RATIO['A100 40GB']:.2f}. "
            f"Model-vs-human stimuli counted in the registry: {int(est.attrs['mvh_images']):,}. All numbers in this "
            "table are estimates, not measurements.")
