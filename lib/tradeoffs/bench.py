"""Extraction benchmark: `python -m tradeoffs.bench [--device cpu|cuda] [--quick] [--threads N] [--scale K]`.

Every figure is measured in the same run and reported as a ratio to a plain timm forward pass (batched, on-device
preprocessing, `inference_mode`), after warm-up, as the median over repeats with the spread (min-max).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from . import features, models, provenance, results, store
from .errors import TradeoffsError

BASELINE = "plain_forward"
PAIRED = ("extract", "hooks", "extract_first_cached", "plain_forward_fp32", "plain_forward_nchw")
MAX_LAYERS = 6


@dataclass(frozen=True)
class Case:
    """One measured setting: a model (random init unless weights are offline), input size, image count, batch."""

    model: str
    weights: str
    size: int
    images: int
    batch: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.size}px b{self.batch}"


@dataclass(frozen=True)
class Plan:
    """Cases, repeats and warm-up runs, and the peak-memory setting (model, input size, image counts: the first two a 10× step)."""

    cases: tuple[Case, ...]
    repeats: int
    warmup: int
    memory_model: str
    memory_size: int
    memory_images: tuple[int, ...]


# Nine rounds: with three, the median first-cached ratio of the ResNet-18 case ranged 0.79-0.97 over three runs
# on one idle machine (round-to-round noise of a 0.27 s call), too wide to read a 0.9 target from.
QUICK = Plan((Case("resnet18", "random", 64, 64, 32), Case("efficientnet_lite0", "pretrained", 224, 16, 16)),
             repeats=9, warmup=1, memory_model="resnet18", memory_size=64, memory_images=(100, 1000))
# About 2 min on one thread of an idle 2-core machine (7 min when other jobs share it); on a GPU use --scale.
FULL = Plan((Case("resnet50", "random", 64, 64, 32), Case("resnet50", "random", 64, 64, 64),
             Case("resnet50", "random", 224, 16, 8), Case("efficientnet_lite0", "pretrained", 224, 32, 16),
             Case("vit_base_patch16_224", "random", 224, 4, 4)),
            repeats=3, warmup=1, memory_model="resnet18", memory_size=32, memory_images=(1000, 10000, 20000))


def scaled(plan: Plan, factor: int) -> Plan:
    """The plan with `factor` times the images (and batch, up to 256) per case; memory counts unchanged."""
    return replace(plan, cases=tuple(replace(c, images=c.images * factor, batch=min(256, c.batch * factor))
                                     for c in plan.cases))


def bench_layers(model: models.Model) -> list[str]:
    """The model's own feature layers (logits excluded), thinned evenly to at most MAX_LAYERS."""
    names = [n for n in model.layers() if n != "logits"]
    step = max(1, -(-len(names) // MAX_LAYERS))
    return names[step - 1::step] if len(names) > MAX_LAYERS else names


def at_size(model: models.Model, size: int) -> models.Model:
    """The model fed `size`x`size` images as they are (no resize to its native size, as for BAPPS 64x64 patches)."""
    if (size, size) == model.preprocess.input_size and model.preprocess.crop_pct == 1.0:
        return model
    return replace(model, preprocess=replace(model.preprocess, input_size=(size, size), crop_pct=1.0))


def timed(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, sync: bool,
          settle: Callable[[], object] = lambda: None) -> dict[str, list[float]]:
    """Wall seconds of each function over `repeats` rounds after `warmup` rounds; within a round every function runs
    once, in turn, so a change in the machine's load hits all of them alike and per-round ratios stay comparable.
    `settle` runs untimed after each function (e.g. waits for queued cache writes, so that one function's background
    work does not slow the next one's timing)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, fn in fns.items():
            if sync:
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if sync:
                torch.cuda.synchronize()
            if r >= warmup:
                out[k].append(time.perf_counter() - t)
            settle()
    return out


def _layout(module: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """The module's weights in channels_last or contiguous (NCHW) layout (in place; variants share one module)."""
    return module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _plain_forward(model: models.Model, x: torch.Tensor, batch: int, device: torch.device, amp: bool,
                   channels_last: bool) -> Callable[[], None]:
    module = model.module.to(device)

    @torch.inference_mode()
    def run() -> None:
        _layout(module, channels_last)
        for s in range(0, len(x), batch):
            xb = model.preprocess(x[s:s + batch].to(device, non_blocking=True))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                module(xb)
    return run


def _hooked(model: models.Model, x: torch.Tensor, layers: list[str], batch: int, device: torch.device,
            amp: bool) -> Callable[[], None]:
    """Hook-based extraction of the same layers: a full forward pass, each hooked output copied to the CPU (on CUDA
    with AMP and channels_last, as `features.extract` does)."""
    module = model.module.to(device)
    cuda = device.type == "cuda"

    @torch.inference_mode()
    def run() -> None:
        _layout(module, cuda)
        store: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        hooks = [module.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: store[n].append(o.float().cpu()))
                 for n in layers]
        try:
            for s in range(0, len(x), batch):
                xb = model.preprocess(x[s:s + batch].to(device, non_blocking=True))
                if cuda:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    module(xb)
        finally:
            for h in hooks:
                h.remove()
    return run


def bench_case(case: Case, device: torch.device, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Images/s of each variant for one case (random images drawn once, seed 0)."""
    torch.manual_seed(0)
    model = at_size(models.load(case.model, weights=case.weights), case.size)
    layers, n, batch = bench_layers(model), case.images, case.batch
    x = torch.rand(n, 3, case.size, case.size, generator=torch.Generator().manual_seed(0))
    cuda = device.type == "cuda"
    if cuda:
        x = x.pin_memory()

    def extract(cache: bool) -> xr.Dataset:
        return features.extract(model, x, layers, batch_size=batch, device=device, cache=cache, progress=False)

    variants: dict[str, Callable[[], object]] = {
        BASELINE: _plain_forward(model, x, batch, device, amp=cuda, channels_last=cuda),
        "extract": lambda: extract(cache=False),
        "hooks": _hooked(model, x, layers, batch, device, amp=cuda),
    }
    if cuda:
        variants["plain_forward_fp32"] = _plain_forward(model, x, batch, device, amp=False, channels_last=True)
        variants["plain_forward_nchw"] = _plain_forward(model, x, batch, device, amp=True, channels_last=False)
    before = os.environ.get("TRADEOFFS_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = iter(range(1 << 30))

        def first_cached() -> None:  # a new, empty cache every time: every chunk is computed and written
            os.environ["TRADEOFFS_CACHE"] = os.path.join(tmp, str(next(fresh)))
            extract(cache=True)

        try:
            # the first call of a process also hashes the model's weights once
            cold = timed({"cold": first_cached}, 1, 0, cuda, settle=results.flush)["cold"]
            variants["extract_first_cached"] = first_cached  # its writes overlap nothing timed (`settle`)
            speeds = {k: [n / s for s in secs]
                      for k, secs in timed(variants, repeats, warmup, cuda, settle=results.flush).items()}
            again = timed({"again": lambda: extract(cache=True)}, repeats, 0, cuda)["again"]  # the last cache, full
        finally:
            if before is None:
                del os.environ["TRADEOFFS_CACHE"]
            else:
                os.environ["TRADEOFFS_CACHE"] = before
    speeds["extract_cold_first_call"] = [n / s for s in cold]
    speeds["extract_cached_rerun"] = [n / s for s in again]
    return speeds


_MEMORY = """
import sys, torch, numpy as np
from tradeoffs import bench, features, models
name, size, n, device, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), torch.device(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
m = bench.at_size(models.load(name, weights='random'), size)
layers = bench.bench_layers(m)
x = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
if device.type == 'cuda':
    m.module.to(device); torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = bench.rss_mib(reset_peak=True)
ds = features.extract(m, x, layers, batch_size=64, device=device, pool='mean', cache=False, progress=False)
peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == 'cuda' else bench.rss_mib(peak=True) - base
print(peak, ds.nbytes / 2**20)
"""


def rss_mib(peak: bool = False, reset_peak: bool = False) -> float:
    """This process's resident memory (VmRSS) or its peak since the last reset (VmHWM), in MiB (Linux only)."""
    status = Path("/proc/self/status")
    if not status.exists():
        raise TradeoffsError("CPU peak memory needs Linux /proc; run the benchmark on Linux or with --device cuda")
    if reset_peak:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
    key = "VmHWM:" if peak else "VmRSS:"
    line = next(ln for ln in status.read_text().splitlines() if ln.startswith(key))
    return int(line.split()[1]) / 1024


def peak_memory(model: str, size: int, n: int, device: str, threads: int) -> tuple[float, float]:
    """Peak memory (MiB) above the loaded model and input images while extracting mean-pooled features of every
    feature layer of `n` images, measured in a fresh process (RSS on CPU, allocated memory on CUDA), and the size of
    the features returned (MiB), which any extraction must hold."""
    cmd = [sys.executable, "-c", _MEMORY, model, str(size), str(n), device, str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise TradeoffsError(f"peak-memory subprocess failed ({tail}); rerun it alone to see the traceback")
    peak, output = out.stdout.strip().splitlines()[-1].split()
    return float(peak), float(output)


def _load() -> tuple[float, float, float]:
    return os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def run(device: str, plan: Plan, note: str = "") -> xr.Dataset:
    """The whole benchmark as a Dataset: images/s (case, variant, repeat) and peak memory (n_images), with provenance."""
    dev = torch.device(device)
    load_before = _load()
    speeds = []
    for case in plan.cases:
        print(f"benchmarking {case.label} ({case.images} images) on {device} ...", flush=True)
        speeds.append(bench_case(case, dev, plan.repeats, plan.warmup))
    variants = [BASELINE, *sorted({v for s in speeds for v in s} - {BASELINE})]
    arr = np.full((len(speeds), len(variants), plan.repeats), np.nan)
    for i, s in enumerate(speeds):
        for j, v in enumerate(variants):
            arr[i, j, :len(s.get(v, []))] = s.get(v, [])
    fields = {k: [getattr(c, k) for c in plan.cases] for k in ("model", "weights", "size", "images", "batch")}
    ds = xr.Dataset({"images_per_s": (("case", "variant", "repeat"), arr,
                                      {"units": "images/s", "long_name": "throughput"})},
                    coords={"case": [c.label for c in plan.cases], "variant": variants,
                            "repeat": np.arange(plan.repeats), **{k: ("case", v) for k, v in fields.items()}})
    print(f"peak memory of {plan.memory_model} at {plan.memory_size}px for {plan.memory_images} images ...", flush=True)
    mem = [peak_memory(plan.memory_model, plan.memory_size, n, device, torch.get_num_threads())
           for n in plan.memory_images]
    ds["peak_memory_mib"] = ("n_images", [m[0] for m in mem],
                             {"units": "MiB", "long_name": "peak memory above model and inputs"})
    ds["output_mib"] = ("n_images", [m[1] for m in mem], {"units": "MiB", "long_name": "size of the features returned"})
    ds = ds.assign_coords(n_images=list(plan.memory_images))
    ds.attrs.update(
        device_name=provenance.device_name(), threads=torch.get_num_threads(), torch_version=torch.__version__,
        timm_version=metadata.version("timm"), repeats=plan.repeats, warmup=plan.warmup,
        memory_model=f"{plan.memory_model} {plan.memory_size}px, mean-pooled features of every feature layer",
        load_average_before=" ".join(f"{v:.2f}" for v in load_before),
        load_average_after=" ".join(f"{v:.2f}" for v in _load()), note=note)
    return ds


def summary(ds: xr.Dataset) -> pd.DataFrame:
    """Every variant's images/s as a ratio to the plain forward pass of the same case: median, min, max over repeats.

    Variants timed in the same rounds as the plain pass (PAIRED) are divided round by round; the cached runs, timed
    after them, by the median plain pass.
    """
    rows = []
    for case in ds.case.values:
        s = ds.images_per_s.sel(case=case)
        plain = s.sel(variant=BASELINE).values
        base = float(np.nanmedian(plain))
        for v in ds.variant.values:
            vals = s.sel(variant=v).values / (plain if v in PAIRED or v == BASELINE else base)
            vals = vals[np.isfinite(vals)]
            if len(vals):
                rows.append({"case": str(case), "variant": str(v), "ratio": float(np.median(vals)),
                             "low": float(vals.min()), "high": float(vals.max()), "plain_images_per_s": base})
    return pd.DataFrame(rows)


def cached_fraction(ds: xr.Dataset) -> pd.Series:
    """Per case: wall time of a cached rerun as a fraction of the first (caching) run, median over repeats."""
    first = ds.images_per_s.sel(variant="extract_first_cached").median("repeat", skipna=True)
    again = ds.images_per_s.sel(variant="extract_cached_rerun").median("repeat", skipna=True)
    return (first / again).to_series().rename("cached_rerun_fraction")


def report(ds: xr.Dataset) -> list[str]:
    """Printable lines: per case the plain forward images/s and every variant's ratio (median [min-max])."""
    table = summary(ds)
    lines = []
    for case, part in table.groupby("case", sort=False):
        base = part["plain_images_per_s"].iloc[0]
        ratios = [f"{r.variant} {r.ratio:.2f}x [{r.low:.2f}-{r.high:.2f}]" for r in part.itertuples()
                  if r.variant != BASELINE]
        lines.append(f"{case}: plain forward {base:.1f} img/s; " + "; ".join(ratios))
    frac = cached_fraction(ds)
    lines.append("cached rerun / first run: " + ", ".join(f"{c} {v:.1%}" for c, v in frac.items()))
    lines.append("peak memory above model and inputs: " + ", ".join(
        f"{float(m):.0f} MiB for {int(n)} images ({float(o):.0f} MiB of it the features returned)"
        for m, o, n in zip(ds.peak_memory_mib.values, ds.output_mib.values, ds.n_images.values)))
    return lines


def default_out(device: str, quick: bool) -> Path:
    """`<repo>/data/benchmarks/<device>[_quick].nc`."""
    root = results.repo_root() or Path(".")
    return root / "data" / "benchmarks" / f"{device}{'_quick' if quick else ''}.nc"


def save(ds: xr.Dataset, out: Path, plan: Plan, *, profile: str, elapsed_s: float) -> Path:
    """Write the benchmark atomically with provenance (the plan and thread count as parameters); returns `out`."""
    params = {"device": ds.attrs.get("device_name", ""), "threads": int(ds.attrs.get("threads", 0)), "plan": asdict(plan)}
    return store.write(ds, out, profile=profile, parameters=params, elapsed_s=elapsed_s,
                         tolerance={"rtol": 1.0, "atol": 0.0})  # timings: nothing reproduces exactly


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tradeoffs.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="two small cases, few images (under 2 min on 2 CPU cores)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default 1 on CPU: stable ratios on a shared machine; torch's own on CUDA)")
    parser.add_argument("--scale", type=int, default=1, help="multiply the images (and batch) per case, e.g. 8 on a GPU")
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. what else ran)")
    parser.add_argument("--out", type=Path, help="where to store the NetCDF (default data/benchmarks/<device>[_quick].nc)")
    args = parser.parse_args(argv)
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise TradeoffsError("--device cuda but no CUDA device is visible; use --device cpu")
        if args.scale < 1 or (args.threads is not None and args.threads < 1):
            raise TradeoffsError("--scale and --threads must be >= 1")
        torch.set_num_threads(args.threads or (1 if args.device == "cpu" else torch.get_num_threads()))
        plan = scaled(QUICK if args.quick else FULL, args.scale)
        start = time.perf_counter()
        ds = run(args.device, plan, args.note)
        print("\n".join(report(ds)))
        out = args.out or default_out(args.device, args.quick)
        save(ds, out, plan, profile="smoke" if args.quick else "default", elapsed_s=time.perf_counter() - start)
    except TradeoffsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"stored {out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
