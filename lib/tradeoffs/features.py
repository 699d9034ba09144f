"""Batched extraction of named layers into a labelled xarray Dataset (cached by content)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from . import results
from .errors import TradeoffsError
from .models import Model

Pool = Literal["mean", "max", "cls"] | None
CHUNK = 2048  # images per cache entry: a killed run resumes at the first missing chunk
PIN_MAX_BYTES = 1 << 30  # larger outputs stay in pageable memory (pinning gigabytes stalls the host)


def as_image_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate images; return a [N,3,H,W] view: uint8 (0..255) or float in [0,1], not copied when possible.

    Accepted: uint8 [N,H,W,3] (RGB, as loaded from files) or floating [N,3,H,W] already in [0,1].
    """
    t = torch.as_tensor(images)
    if t.ndim != 4:
        raise TradeoffsError(f"images must be 4-D (uint8 [N,H,W,3] or float [N,3,H,W]); got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise TradeoffsError("no images given: pass at least one image")
    if t.dtype == torch.uint8:
        if t.shape[-1] != 3:
            raise TradeoffsError(f"uint8 images must be [N,H,W,3] RGB; got shape {tuple(t.shape)} (convert grey images to RGB)")
        return t.permute(0, 3, 1, 2)
    if not t.is_floating_point():
        raise TradeoffsError(f"images must be uint8 or floating point; got {t.dtype}")
    if t.shape[1] != 3:
        raise TradeoffsError(f"float images must be [N,3,H,W]; got shape {tuple(t.shape)}")
    lo, hi = float(t.min()), float(t.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise TradeoffsError(f"float images must lie in [0,1]; got [{lo:.3g}, {hi:.3g}] (divide uint8 images by 255)")
    return t


def check_layers(model: Model, layers: Sequence[str]) -> list[str]:
    """The requested layers, refusing unknown names with close matches from the model's own list."""
    valid = model.layers()
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise TradeoffsError(f"no layers requested; {model.name} has: {', '.join(valid)}")
    for layer in layers:
        if layer not in valid:
            close = difflib.get_close_matches(layer, valid, n=5) or valid[:10]
            raise TradeoffsError(f"{model.name} has no layer {layer!r}; close names: {', '.join(close)}")
    return list(dict.fromkeys(layers))


def resolve_device(model: Model, device: str | torch.device = "auto") -> torch.device:
    """CUDA when available and the model can run there, else CPU."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() and model.supports_device("cuda") else "cpu"
    device = torch.device(device)
    if not model.supports_device(device):
        raise TradeoffsError(f"{model.name} cannot run on {device}; use device='cpu'")
    return device


def _pool(t: torch.Tensor, pool: Pool) -> torch.Tensor:
    if pool is None or t.ndim == 2:
        return t
    if t.ndim == 4:  # [N,C,H,W]
        return t.amax(dim=(2, 3)) if pool == "max" else t.mean(dim=(2, 3))
    if t.ndim == 3:  # [N,T,C] tokens
        return t[:, 0] if pool == "cls" else (t.amax(dim=1) if pool == "max" else t.mean(dim=1))
    raise TradeoffsError(f"cannot pool a feature of shape {tuple(t.shape)}")


def _dims(layer: str, ndim: int) -> tuple[str, ...]:
    """Dims of one layer's variable: `image` is shared; the others are qualified by the layer (sizes differ)."""
    if layer == "logits":
        return ("image", "class")
    generic = {2: ("channel",), 3: ("token", "channel"), 4: ("channel", "y", "x")}[ndim]
    return ("image", *(f"{layer}.{d}" for d in generic))


_KEYS: dict[int, tuple[tuple, str]] = {}


def weights_key(model: Model) -> str:
    """Content key of the model's current weights and preprocessing.

    Hashing the weights is memoised on a fingerprint that any change of them alters (each tensor's storage address
    and in-place version counter), so training between two calls gives a new key without rehashing every call.
    """
    state = model.module.state_dict()
    fingerprint = (model.name, repr(model.preprocess),
                   tuple((k, t.data_ptr(), t._version, tuple(t.shape)) for k, t in state.items()))
    memo = _KEYS.get(id(model.module))
    if memo is None or memo[0] != fingerprint:
        memo = (fingerprint, results.content_key(model.name, repr(model.preprocess), state))
        _KEYS[id(model.module)] = memo
    return memo[1]


def _buffer(n: int, shape: tuple[int, ...], cuda: bool) -> torch.Tensor:
    """Host array for `n` images' features of one layer: pinned on CUDA (async copies) unless it is very large."""
    pin = cuda and n * math.prod(shape) * 4 <= PIN_MAX_BYTES
    return torch.empty((n, *shape), dtype=torch.float32, pin_memory=pin)


@torch.inference_mode()
def _run(model: Model, images: torch.Tensor, layers: list[str], batch_size: int, device: torch.device,
         amp: bool, pool: Pool, progress: bool, desc: str, out: dict[str, torch.Tensor], offset: int,
         total: int) -> None:
    """Write the features of `images` into `out[layer][offset:]`, batch by batch; `out` arrays for `total` images are
    allocated on first use. NaN/inf is caught by a running sum kept on the device (one read of each batch, no sync);
    only if that sum is not finite are the features checked element by element."""
    cuda = device.type == "cuda"
    module = model.module.to(device)
    if cuda:
        module = module.to(memory_format=torch.channels_last)
    total_sum = torch.zeros((), dtype=torch.float32, device=device)  # NaN/inf anywhere make it NaN/inf
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = images[start:start + batch_size]
        if cuda:
            batch = batch.pin_memory().to(device, non_blocking=True)
        x = batch.to(torch.float32) / 255.0 if batch.dtype == torch.uint8 else batch.to(torch.float32)
        x = model.preprocess(x)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16, enabled=amp):
            feats = model.intermediates(x, layers)
        for layer in layers:
            f = _pool(feats[layer], pool if layer != "logits" else None).float()
            total_sum += f.sum()
            if layer not in out:
                out[layer] = _buffer(total, tuple(f.shape[1:]), cuda)
            at = offset + start
            out[layer][at:at + f.shape[0]].copy_(f, non_blocking=cuda)
    if cuda:
        torch.cuda.synchronize(device)
    if not torch.isfinite(total_sum):  # NaN/inf, or only a sum of large finite values overflowing
        part = slice(offset, offset + images.shape[0])
        bad = [layer for layer, t in out.items() if not torch.isfinite(t[part]).all()]
        if bad:
            raise TradeoffsError(f"{model.name} layer {bad[0]!r} gave NaN/inf features; "
                                 "check the input range, or rerun with amp=False")


def extract(model: Model, images: np.ndarray | torch.Tensor, layers: Sequence[str], *, batch_size: int = 64,
            device: str | torch.device = "auto", amp: bool | None = None, pool: Pool = None,
            image_ids: Sequence | None = None, cache: bool = True, progress: bool = True) -> xr.Dataset:
    """Features of `layers` for every image, as a Dataset with one variable per layer.

    images: uint8 [N,H,W,3] or float [N,3,H,W] in [0,1]; the model's own preprocessing is applied on the device.
    Dims: (image, channel, y, x) for conv maps, (image, token, channel) for tokens, (image, channel) when pooled,
    (image, class) for "logits"; all but `image` and `class` are qualified by the layer, e.g. `layer1.channel`,
    because layers differ in size. pool: "mean"/"max" over space (or tokens), "cls" for the class token.
    AMP (float16) and channels_last are used on CUDA by default; CPU runs in float32.
    Results are cached by content (weights, preprocessing, images, layers, options) in chunks, written on a
    background thread while the next chunk runs, so a rerun recomputes nothing and an interrupted run resumes. Every
    batch is written straight into one array per layer for all images (chunks stored to the cache are views of it),
    so the output is held once, never concatenated.
    """
    if batch_size < 1:
        raise TradeoffsError(f"batch_size must be >= 1; got {batch_size}")
    if pool not in (None, "mean", "max", "cls"):
        raise TradeoffsError(f"pool must be None, 'mean', 'max' or 'cls'; got {pool!r}")
    layers = check_layers(model, layers)
    x = as_image_tensor(images)  # uint8 stays uint8 until it reaches the device
    dev = resolve_device(model, device)
    amp = (dev.type == "cuda") if amp is None else amp
    n = x.shape[0]
    ids = np.arange(n) if image_ids is None else np.asarray(image_ids)
    if len(ids) != n:
        raise TradeoffsError(f"image_ids has {len(ids)} entries for {n} images")
    out: dict[str, torch.Tensor] = {}

    def view(start: int, size: int) -> xr.Dataset:
        return xr.Dataset({layer: (_dims(layer, t.ndim), t[start:start + size].numpy()) for layer, t in out.items()})

    def compute(start: int, chunk: torch.Tensor, desc: str) -> xr.Dataset:
        _run(model, chunk, layers, batch_size, dev, amp, pool, progress, desc, out, start, n)
        return view(start, chunk.shape[0])

    n_chunks = (n + CHUNK - 1) // CHUNK
    for c, start in enumerate(range(0, n, CHUNK)):
        chunk = x[start:start + CHUNK]
        desc = f"{model.name} [{c + 1}/{n_chunks}]"
        if not cache:
            compute(start, chunk, desc)
            continue
        key = results.content_key("features-v1", weights_key(model), chunk.contiguous(), layers, pool, bool(amp))
        part = results.cached("features", key, lambda s=start, ch=chunk, d=desc: compute(s, ch, d), background=True)
        for layer in layers:  # a fresh chunk is already in place; a cache hit is copied in, or taken as is if whole
            a = part[layer].values
            if layer not in out and len(a) == n:
                out[layer] = torch.from_numpy(np.require(a, requirements="W"))
            elif layer not in out:
                out[layer] = _buffer(n, a.shape[1:], dev.type == "cuda")
            dst = out[layer][start:start + len(a)].numpy()
            if not np.shares_memory(dst, a):
                dst[...] = a
    ds = view(0, n).assign_coords(image=ids)
    ds.attrs = {"model": model.name, "layers": ",".join(layers), "pool": pool or "none", "amp": int(bool(amp)),
                "device": str(dev)}
    return ds


def to_tensors(ds: xr.Dataset, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The layers of an extracted Dataset as torch tensors (the input form of `tradeoffs.distances`)."""
    return {layer: torch.from_numpy(np.ascontiguousarray(ds[layer].values)) for layer in (layers or list(ds.data_vars))}
