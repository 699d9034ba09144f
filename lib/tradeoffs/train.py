"""One small deterministic training recipe with a checkpoint per epoch (early stopping, AnyNetX).

SGD with momentum, a per-step cosine learning-rate schedule, weight decay and optional random-crop/flip
augmentation. Runs are keyed by content (architecture, initial weights, preprocessing, training arrays, recipe,
device type) and stored under ``results.cache_dir()/train/<key>/`` as ``epoch_000.pt`` (the initial weights),
``epoch_001.pt``, ...; each file holds the model, optimizer and scheduler state, so a killed run resumes after its
last finished epoch and a rerun trains nothing. The data order and augmentation of epoch ``e`` are drawn from a
generator seeded by ``(seed, e)``, which makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import models, results
from .errors import TradeoffsError
from .models import Model

VERSION = "train-v1"  # bump when the recipe's semantics change (invalidates cached runs)
PAD = 4  # pixels of zero padding before the random crop
Callback = Callable[[int, Model], None]
_HISTORY = ["epoch", "train_loss", "train_accuracy", "lr", "seconds"]


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of one training run; `seed` fixes the data order and augmentation (init is the caller's)."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise TradeoffsError(f"epochs must be >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}.")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0):
            raise TradeoffsError(f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got {self.lr}, "
                                 f"{self.momentum}, {self.weight_decay}.")


@dataclass(frozen=True)
class Run:
    """A finished training run: where its checkpoints are and what each epoch did."""

    key: str
    directory: Path
    model_name: str
    recipe: Recipe
    history: pd.DataFrame  # one row per trained epoch: epoch, train_loss, train_accuracy, lr, seconds

    def checkpoint(self, epoch: int) -> Path:
        """The file of `epoch` (0 = initial weights); loadable with `models.load(name, weights=path)`."""
        return checkpoint_path(self.directory, epoch)

    def state_dict(self, epoch: int) -> dict[str, torch.Tensor]:
        """The model weights after `epoch`."""
        return torch.load(self.checkpoint(epoch), map_location="cpu", weights_only=True)["state_dict"]

    def model(self, epoch: int, **kwargs) -> Model:
        """The checkpoint of `epoch` as a `Model` (for names `models.load` knows; kwargs go to it)."""
        return models.load(self.model_name, weights=str(self.checkpoint(epoch)), **kwargs)


def _file(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:03d}.pt"


def checkpoint_path(directory: Path, epoch: int) -> Path:
    """`directory/epoch_NNN.pt`; a clear error when that epoch was never trained."""
    path = _file(directory, epoch)
    if not path.is_file():
        raise TradeoffsError(f"no checkpoint for epoch {epoch} in {directory}; train it first with tradeoffs.train.fit "
                             "(the early_stopping notebook does so for its runs).")
    return path


def init(name: str, seed: int, **kwargs) -> Model:
    """A freshly initialised `models.load(name, weights="random")`, drawn with torch's RNG seeded by `seed`.

    The global RNG state is restored afterwards, so calling this has no side effects on other code.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.load(name, weights="random", **kwargs)


def _check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", None)
        raise TradeoffsError(f"images must be a uint8 array [N,H,W,3] (as data.cifar10 gives), got {shape}.")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise TradeoffsError(f"labels must be integers, one per image ({len(images)}), got {labels.dtype} {labels.shape}.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise TradeoffsError(f"labels must lie in 0..{num_classes - 1} (the model's classes).")
    if len(images) < batch_size:
        raise TradeoffsError(f"{len(images)} images are fewer than one batch ({batch_size}); lower batch_size.")


def run_key(model: Model, images: np.ndarray, labels: np.ndarray, recipe: Recipe, device: str | torch.device = "auto") -> str:
    """Content key of a run: architecture name, initial weights, preprocessing, data, recipe, device type."""
    dev = _device(model, device)
    return results.content_key(VERSION, model.name, repr(model.preprocess), model.module.state_dict(),
                               np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64), asdict(recipe), dev.type)


def _device(model: Model, device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() and model.supports_device("cuda") else "cpu"
    dev = torch.device(device)
    if not model.supports_device(dev) or getattr(model.module, "cpu_only", False):
        raise TradeoffsError(f"{model.name} cannot be trained on {dev}: use a PyTorch model (TFLite graphs are fixed).")
    return dev


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels (warn where none exists) and no cuDNN autotuning, restored on exit."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator for the data order and augmentation of one epoch, seeded by (seed, epoch)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero-padding by `PAD` pixels, and a horizontal flip with probability ½: [B,C,H,W] -> same."""
    b, _, h, w = x.shape
    shifts = torch.randint(0, 2 * PAD + 1, (b, 2), generator=generator).to(x.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = torch.arange(h, device=x.device)[None] + shifts[:, :1]
    cols = torch.arange(w, device=x.device)[None] + shifts[:, 1:]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    out = padded[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)  # advanced indices around a slice put the batch grid first: [B,H,W,C]


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _last_epoch(directory: Path, epochs: int) -> int:
    done = [int(p.stem.split("_")[1]) for p in directory.glob("epoch_*.pt")]
    return max((e for e in done if e <= epochs), default=-1)


def fit(model: Model, images: np.ndarray, labels: np.ndarray, recipe: Recipe, *, device: str | torch.device = "auto",
        callback: Callback | None = None, tag: str = "", progress: bool = True) -> Run:
    """Train `model` in place on uint8 `images` [N,H,W,3] with the model's own preprocessing; a checkpoint per epoch.

    `callback(epoch, model)` is called with the model in eval mode for epoch 0 (the initial weights) and after every
    epoch, also for epochs read back from the cache. `tag` describes the data in the run's manifest (not in the key).
    Ends with `model` holding the last epoch's weights, in eval mode.
    """
    module = model.module
    _check_arrays(images, labels, getattr(module, "num_classes", 1000), recipe.batch_size)
    dev = _device(model, device)
    key = run_key(model, images, labels, recipe, dev)
    directory = results.cache_dir() / "train" / key[:32]
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        manifest.write_text(json.dumps({"key": key, "model": model.name, "recipe": asdict(recipe), "n_train": len(images),
                                        "tag": tag, "device": dev.type, "version": VERSION,
                                        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
                                       indent=1))
    steps = len(images) // recipe.batch_size  # the last partial batch is dropped
    module.to(dev)
    opt = torch.optim.SGD(module.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps)
    history: list[dict] = []
    last = _last_epoch(directory, recipe.epochs)
    if last < 0:
        _save(_file(directory, 0), {"state_dict": module.state_dict(), "epoch": 0, "history": []})
        last = 0
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(dev)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(dev)

    def replay(epoch: int) -> None:
        state = torch.load(checkpoint_path(directory, epoch), map_location=dev, weights_only=True)
        module.load_state_dict(state["state_dict"])
        if epoch == last and epoch > 0:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        history[:] = state["history"]
        if callback is not None:
            module.eval()
            callback(epoch, model)

    with deterministic(dev):
        for epoch in range(last + 1) if callback is not None else (last,):
            replay(epoch)
        bar = tqdm(range(last + 1, recipe.epochs + 1), desc=f"train {model.name} seed {recipe.seed}",
                   unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            gen = epoch_generator(recipe.seed, epoch)
            order = torch.randperm(len(images), generator=gen)[: steps * recipe.batch_size].to(dev)
            module.train()
            loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
            correct = torch.zeros((), device=dev, dtype=torch.int64)
            for idx in order.view(steps, recipe.batch_size):
                x = x_all[idx].permute(0, 3, 1, 2).float().div_(255)
                if recipe.augment:
                    x = augment(x, gen)
                logits = module(model.preprocess(x))
                loss = F.cross_entropy(logits, y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach() * len(idx)
                correct += (logits.detach().argmax(1) == y_all[idx]).sum()
            n = steps * recipe.batch_size
            history.append({"epoch": epoch, "train_loss": float(loss_sum) / n, "train_accuracy": int(correct) / n,
                            "lr": float(sched.get_last_lr()[0]), "seconds": time.perf_counter() - start})
            if not np.isfinite(history[-1]["train_loss"]):
                raise TradeoffsError(f"training {model.name} diverged in epoch {epoch} (loss is not finite); lower lr.")
            _save(_file(directory, epoch),
                  {"state_dict": module.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                   "epoch": epoch, "history": list(history)})
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", acc=f"{history[-1]['train_accuracy']:.3f}")
            module.eval()
            if callback is not None:
                callback(epoch, model)
    module.eval()
    return Run(key, directory, model.name, recipe, pd.DataFrame(history, columns=_HISTORY))


def runs(directory: Path | None = None) -> pd.DataFrame:
    """Every cached run: key, model, tag, seed, epochs (planned), epochs_done, n_train, device, path."""
    root = Path(directory) if directory else results.cache_dir() / "train"
    rows = []
    for manifest in sorted(root.glob("*/manifest.json")):
        info = json.loads(manifest.read_text())
        recipe = Recipe(**info["recipe"])
        rows.append({"key": info["key"], "model": info["model"], "tag": info["tag"], "seed": recipe.seed,
                     "epochs": recipe.epochs, "epochs_done": _last_epoch(manifest.parent, recipe.epochs),
                     "n_train": info["n_train"], "device": info["device"], "path": str(manifest.parent)})
    return pd.DataFrame(rows, columns=["key", "model", "tag", "seed", "epochs", "epochs_done", "n_train", "device", "path"])


def load_run(key: str, directory: Path | None = None) -> Run:
    """A cached run by its key (or the key's first 32 characters), with its history up to the last finished epoch."""
    root = Path(directory) if directory else results.cache_dir() / "train"
    folder = root / key[:32]
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise TradeoffsError(f"no training run {key[:12]}… under {root}; rerun the notebook that trained it "
                             "(e.g. `python -m tradeoffs.run --only early_stopping`).")
    info = json.loads(manifest.read_text())
    recipe = Recipe(**info["recipe"])
    last = _last_epoch(folder, recipe.epochs)
    history = torch.load(checkpoint_path(folder, last), map_location="cpu", weights_only=True)["history"] if last >= 0 else []
    return Run(info["key"], folder, info["model"], recipe, pd.DataFrame(history, columns=_HISTORY))
