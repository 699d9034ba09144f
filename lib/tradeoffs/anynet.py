"""AnyNetX (Radosavovic et al. 2020): the design space, a seeded sampler with a complexity filter, and a builder.

An AnyNetX network is a stem (3×3 conv), four stages of X blocks (1×1 conv, 3×3 group conv, 1×1 conv, residual;
timm's RegNet `Bottleneck` without squeeze-excitation) and a linear head. Each stage i has a depth d_i, a width w_i,
a bottleneck ratio b_i (the block's inner width is w_i / b_i) and a group width g_i. The paper's space is
d_i <= 16, w_i <= 1024 (multiples of 8), b_i in {1, 2, 4}, g_i in {1, 2, ..., 32}, at 224² inputs with a stride-2 stem;
Tuggener et al. kept 340-400 MFLOPs (multiply-adds). `Space` holds such limits; `CIFAR` scales them to 32×32 inputs
(stride-1 stem, stage strides 1, 2, 2, 2) and a CPU budget.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import xarray as xr
from timm.layers import ClassifierHead, ConvNormAct
from timm.models.regnet import Bottleneck, RegStage
from torch import nn

from . import data, train
from .errors import TradeoffsError
from .models import Model, Preprocess, _model

STAGES = 4


@dataclass(frozen=True)
class Design:
    """One AnyNetX architecture: per-stage depth, width, bottleneck ratio and group width, plus the stem."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    bottlenecks: tuple[int, ...]
    groups: tuple[int, ...]
    stem_width: int = 16
    stem_stride: int = 1
    strides: tuple[int, ...] = (1, 2, 2, 2)

    def __post_init__(self) -> None:
        for name in ("depths", "widths", "bottlenecks", "groups", "strides"):
            if len(getattr(self, name)) != STAGES:
                raise TradeoffsError(f"{name} needs one value per stage ({STAGES}), got {getattr(self, name)}.")
        for w, b, g in zip(self.widths, self.bottlenecks, self.groups):
            if w % b or (w // b) % g:
                raise TradeoffsError(f"stage width {w} / bottleneck {b} must be a whole multiple of group width {g}.")

    @property
    def name(self) -> str:
        """A readable id, e.g. `anynetx_d1-2-2-1_w16-32-64-128_b1-2-1-4_g4-8-2-16`."""
        part = lambda k, v: k + "-".join(map(str, v))  # noqa: E731
        return "anynetx_" + "_".join([part("d", self.depths), part("w", self.widths), part("b", self.bottlenecks),
                                      part("g", self.groups)])

    def macs(self, size: int = 32, num_classes: int = 10) -> int:
        """Multiply-adds of one forward pass at `size`×`size` (convolutions and the head; what pycls calls flops)."""
        h = math.ceil(size / self.stem_stride)
        total = 9 * 3 * self.stem_width * h * h
        c = self.stem_width
        for d, w, b, g, s in zip(self.depths, self.widths, self.bottlenecks, self.groups, self.strides):
            for i in range(d):
                stride = s if i == 0 else 1
                out = math.ceil(h / stride)
                inner = w // b
                total += c * inner * h * h + 9 * inner * g * out * out + inner * w * out * out
                if stride != 1 or c != w:
                    total += c * w * out * out
                c, h = w, out
        return total + c * num_classes


@dataclass(frozen=True)
class Space:
    """Limits of the design space and the complexity band (multiply-adds at `size`×`size`) that samples must meet."""

    max_depth: int
    max_width: int
    bottlenecks: tuple[int, ...] = (1, 2, 4)
    groups: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    min_width: int = 8
    macs: tuple[float, float] = (340e6, 400e6)
    size: int = 224
    stem_width: int = 32
    stem_stride: int = 2
    strides: tuple[int, ...] = (2, 2, 2, 2)

    def __post_init__(self) -> None:  # lists (e.g. from JSON parameters) become tuples, so designs compare equal
        for name in ("bottlenecks", "groups", "macs", "strides"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def contains(self, design: Design) -> bool:
        """Whether `design` lies in the space and meets its complexity band."""
        inside = (all(1 <= d <= self.max_depth for d in design.depths)
                  and all(self.min_width <= w <= self.max_width and w % 8 == 0 for w in design.widths)
                  and set(design.bottlenecks) <= set(self.bottlenecks) and set(design.groups) <= set(self.groups)
                  and design.stem_width == self.stem_width and design.stem_stride == self.stem_stride
                  and design.strides == self.strides)
        return inside and self.macs[0] <= design.macs(self.size) <= self.macs[1]


PAPER = Space(max_depth=16, max_width=1024)
# Scaled for 32×32 inputs and a 2-core CPU budget: stride-1 stem (the usual CIFAR stem), so the stages see 32, 16, 8
# and 4 pixels; depths <= 4, widths <= 256, group widths <= 16; a ±7 % band around 3 M multiply-adds (Tuggener's band
# is ±8 % around 370 M at 224²; 3 M is what lets one core train a network at about 300 images/s).
CIFAR = Space(max_depth=4, max_width=256, groups=(1, 2, 4, 8, 16), macs=(2.8e6, 3.2e6), size=32, stem_width=16,
              stem_stride=1, strides=(1, 2, 2, 2))


def _draw(space: Space, rng: np.random.Generator) -> Design | None:
    depths = tuple(int(d) for d in rng.integers(1, space.max_depth + 1, STAGES))
    log_w = rng.uniform(np.log2(space.min_width), np.log2(space.max_width), STAGES)  # log-uniform widths
    widths = tuple(int(min(space.max_width, max(space.min_width, 8 * round(2 ** lw / 8)))) for lw in log_w)
    bottlenecks = tuple(int(b) for b in rng.choice(space.bottlenecks, STAGES))
    groups = tuple(int(g) for g in rng.choice(space.groups, STAGES))
    if any(w % b or (w // b) % g for w, b, g in zip(widths, bottlenecks, groups)):
        return None
    return Design(depths, widths, bottlenecks, groups, space.stem_width, space.stem_stride, space.strides)


def sample(n: int, space: Space = CIFAR, seed: int = 0, max_tries: int = 1_000_000) -> list[Design]:
    """`n` distinct designs drawn uniformly (log-uniform widths) from `space`, kept if within its complexity band."""
    rng, found = np.random.default_rng(seed), {}
    for _ in range(max_tries):
        design = _draw(space, rng)
        if design is not None and design not in found and space.contains(design):
            found[design] = None
            if len(found) == n:
                return list(found)
    raise TradeoffsError(f"found only {len(found)} of {n} designs in {max_tries} draws; widen the complexity band "
                         f"{space.macs} or the space's limits.")


class AnyNet(nn.Module):
    """The network of a `Design`: stem, four `RegStage`s of X blocks, average pool and a linear classifier."""

    def __init__(self, design: Design, num_classes: int) -> None:
        super().__init__()
        self.design, self.num_classes = design, num_classes
        self.stem = ConvNormAct(3, design.stem_width, 3, stride=design.stem_stride)
        stages, c = [], design.stem_width
        for d, w, b, g, s in zip(design.depths, design.widths, design.bottlenecks, design.groups, design.strides):
            stages.append(RegStage(d, c, w, stride=s, dilation=1, block_fn=Bottleneck, bottle_ratio=1 / b,
                                   group_size=g, se_ratio=0.0))
            c = w
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(c, num_classes, pool_type="avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def build(design: Design, num_classes: int, seed: int = 0, size: int = 32) -> Model:
    """An untrained `Model` of `design`, initialised from torch's RNG seeded by `seed` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = AnyNet(design, num_classes)
    notes = f"AnyNetX {asdict(design)}; {design.macs(size, num_classes) / 1e6:.2f} M multiply-adds at {size}²"
    return _model(design.name, module, Preprocess((size, size), MEAN, STD), "timm RegNet X blocks (tradeoffs.anynet)",
                  "Apache-2.0", None, "", "random", notes)


def describe(designs: Sequence[Design], size: int = 32) -> dict[str, np.ndarray]:
    """Per-design numbers for a results Dataset: total depth, final width, multiply-adds, parameters (10 classes)."""
    return {"total_depth": np.array([sum(d.depths) for d in designs]),
            "final_width": np.array([d.widths[-1] for d in designs]),
            "macs": np.array([d.macs(size) for d in designs], dtype=float),
            "params": np.array([sum(p.numel() for p in AnyNet(d, 10).parameters()) for d in designs], dtype=float)}


# --- one sweep task: train a design on one dataset, score it on held-out images ---------------------------------------

@dataclass(frozen=True)
class Data:
    """A classification task: `name` ("cifar10", "fashion_mnist", "digits" or "folder:<ImageNet-style root>"), the
    source classes it keeps (None = all, else renumbered 0..k-1), and images per class for training and testing."""

    name: str
    n_train: int
    n_test: int
    classes: tuple[int, ...] | None = None
    size: int = 32
    seed: int = 0

    @property
    def label(self) -> str:
        base = self.name.split("/")[-1] if self.name.startswith("folder:") else self.name
        return base if self.classes is None else f"{base}-{len(self.classes)}"


@functools.lru_cache(maxsize=4)
def _split(name: str, split: str) -> xr.Dataset:
    return getattr(data, name)(split)


def arrays(spec: Data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, train labels, test images, test labels of `spec` as uint8 [N,size,size,3] / int64 arrays.

    CIFAR-10 and Fashion-MNIST test on their own test splits; digits and image folders have none, so each class's
    images are split into disjoint train and test parts.
    """
    if spec.name in ("cifar10", "fashion_mnist"):
        parts = [_split(spec.name, split) for split in ("train", "test")]
        classes = spec.classes if spec.classes is not None else range(parts[0].sizes["class"])
        train, test = (data.class_subset(p, list(classes), n, spec.seed) for p, n in zip(parts, (spec.n_train, spec.n_test)))
    elif spec.name == "digits" or spec.name.startswith("folder:"):
        whole = data.digits() if spec.name == "digits" else data.image_folder(
            spec.name.removeprefix("folder:"), spec.n_train + spec.n_test, spec.size, seed=spec.seed)
        classes = spec.classes if spec.classes is not None else range(whole.sizes["class"])
        both = data.class_subset(whole, list(classes), spec.n_train + spec.n_test, spec.seed)
        first = (np.arange(both.sizes["image"]) % (spec.n_train + spec.n_test)) < spec.n_train  # grouped by class
        train, test = both.isel(image=first), both.isel(image=~first)
    else:
        raise TradeoffsError(f"unknown dataset {spec.name!r}; use cifar10, fashion_mnist, digits or folder:<path>.")
    return (data.to_rgb(train["images"].values, spec.size), train["labels"].values,
            data.to_rgb(test["images"].values, spec.size), test["labels"].values)


@dataclass(frozen=True)
class Task:
    """One sweep cell: train `design` (initialised with `init_seed`) on `data` with `recipe`, on `threads` CPU threads."""

    design: Design
    data: Data
    recipe: train.Recipe
    init_seed: int = 0
    device: str = "cpu"
    threads: int = 1


def run_task(task: Task) -> xr.Dataset:
    """Train and test one `Task`: a one-cell Dataset (architecture, dataset, seed) of test accuracy and training stats."""
    torch.set_num_threads(task.threads)
    x_train, y_train, x_test, y_test = arrays(task.data)
    model = build(task.design, int(y_train.max()) + 1, task.init_seed, task.data.size)
    run = train.fit(model, x_train, y_train, task.recipe, device=task.device, progress=False,
                    tag=f"{task.design.name} on {task.data.label}")
    for path in run.directory.glob("epoch_*.pt"):  # a sweep keeps only the final weights (its cells are cached)
        if path != run.checkpoint(task.recipe.epochs):
            path.unlink()
    accuracy = float((predict(model, x_test, task.device) == y_test).mean())
    last = run.history.iloc[-1] if len(run.history) else None
    cell = {"test_accuracy": accuracy,
            "train_accuracy": float(last["train_accuracy"]) if last is not None else np.nan,
            "train_loss": float(last["train_loss"]) if last is not None else np.nan,
            "train_seconds": float(run.history["seconds"].sum())}  # as recorded when trained, also on a replay
    return xr.Dataset({k: (("architecture", "dataset", "seed"), [[[v]]]) for k, v in cell.items()},
                      coords={"architecture": [task.design.name], "dataset": [task.data.label],
                              "seed": [task.init_seed]})


@torch.inference_mode()
def predict(model: Model, images: np.ndarray, device: str = "cpu", batch_size: int = 500) -> np.ndarray:
    """Predicted class of every uint8 image [N,H,W,3], batched."""
    module = model.module.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).to(device).permute(0, 3, 1, 2).float().div_(255)
        out.append(module(model.preprocess(x)).argmax(1).cpu())
    return torch.cat(out).numpy()
