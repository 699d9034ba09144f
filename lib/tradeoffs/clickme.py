"""ClickMe (Fel et al. 2022): the published validation shards, read without TensorFlow, and a model's alignment.

Shards are TFRecord files of `tf.train.Example` records (image JPEG, human importance map JPEG, ImageNet label).
Records are framed and checksummed here with the `crc32c` package and parsed with the `tfrecord` package's compiled
`tf.train.Example` message; `alignment` scores a model's saliency maps against the human maps as Harmonization does.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from crc32c import crc32c
from google.protobuf.message import DecodeError
from tfrecord import example_pb2

from . import features, metrics, registry
from .errors import TradeoffsError
from .models import Model

URL = "https://storage.googleapis.com/serrelab/prj_harmonization/dataset/click-me/val/val-{shard}.tfrecords"
VAL_SHARDS = 17  # serre-lab/Harmonization harmonization/common/clickme_dataset.py: NB_VAL_SHARDS


def masked_crc(buf: bytes) -> int:
    """TFRecord's masked CRC-32C: rotate right by 15 bits and add 0xa282ead8 (mod 2^32)."""
    crc = crc32c(buf)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(path: str | Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file (uint64 length, masked CRC of it, payload, masked CRC), both CRCs checked."""
    damaged = f"{path} is damaged or not a TFRecord file; delete it and download it again."
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise TradeoffsError(f"{path} ends inside a record header (truncated download?); delete it and retry.")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != length_crc:
                raise TradeoffsError(damaged)
            payload, footer = f.read(length), f.read(4)
            if len(payload) < length or len(footer) < 4:
                raise TradeoffsError(f"{path} ends inside a record (truncated download?); delete it and retry.")
            if masked_crc(payload) != struct.unpack("<I", footer)[0]:
                raise TradeoffsError(damaged)
            yield payload


def parse_example(record: bytes) -> dict[str, list]:
    """A serialised `tf.train.Example` as {feature name: list of bytes / floats / ints}."""
    example = example_pb2.Example()
    try:
        example.ParseFromString(record)
    except DecodeError:
        raise TradeoffsError("a record is not a tf.train.Example; is this a ClickMe shard?") from None
    return {name: list(getattr(f, f.WhichOneof("kind")).value) if f.WhichOneof("kind") else []
            for name, f in example.features.feature.items()}


def _decode_jpeg(buf: bytes, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(buf)) as im:
        return np.asarray(im.convert(mode))


def shards(chosen: Sequence[int] | None = None, folder: str | Path | None = None, progress: bool = True) -> list[Path]:
    """Local paths of ClickMe validation shards (`val-<i>.tfrecords`), downloaded with pooch when absent.

    They are looked up in `folder`, else `<data root>/clickme/`, and downloaded there from the serre-lab bucket that
    Harmonization's `load_clickme_val` reads (17 shards, no published checksums: each is pinned on first use,
    `registry.pin`, and its records carry CRCs).
    """
    import pooch

    chosen = list(range(VAL_SHARDS)) if chosen is None else list(chosen)
    if bad := [s for s in chosen if not 0 <= s < VAL_SHARDS]:
        raise TradeoffsError(f"ClickMe shards {bad} do not exist; choose from 0..{VAL_SHARDS - 1}.")
    folder = Path(folder) if folder else registry.data_root() / "clickme"
    paths = []
    for s in chosen:
        name = f"val-{s}.tfrecords"
        if not (folder / name).is_file():
            try:
                pooch.retrieve(registry.download_url(URL.format(shard=s)), known_hash=None, fname=name, path=folder,
                               progressbar=progress)
            except Exception as exc:  # network errors come in many types (requests, OSError, HTTPError)
                raise TradeoffsError(f"cannot download ClickMe shard {URL.format(shard=s)} ({type(exc).__name__}); "
                                     f"go online (the 'full' profile, e.g. on Colab) or put the file at "
                                     f"{folder / name}.") from exc
        registry.pin(folder / name)
        paths.append(folder / name)
    return paths


def items(paths: Sequence[str | Path]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(image uint8 [256,256,3], human importance map uint8 [256,256], ImageNet label) from ClickMe shards."""
    for path in paths:
        for record in records(path):
            ex = parse_example(record)
            if not {"image", "heatmap", "label"} <= ex.keys():
                raise TradeoffsError(f"{path} holds records with features {sorted(ex)}; expected image, heatmap "
                                     "and label (a ClickMe shard from serre-lab).")
            yield _decode_jpeg(ex["image"][0], "RGB"), _decode_jpeg(ex["heatmap"][0], "L"), int(ex["label"][0])


def val(n_images: int | None = None, chosen: Sequence[int] | None = None, folder: str | Path | None = None,
        progress: bool = True) -> xr.Dataset:
    """The first `n_images` ClickMe validation images with their human maps and labels, as a Dataset.

    Variables: images uint8 (image, y, x, channel), heatmaps uint8 (image, y, x), labels int64 (image). Shards are
    read in order and only as many as needed are downloaded (the whole set is several GB once decoded).
    """
    if n_images is not None and n_images < 1:
        raise TradeoffsError(f"n_images must be positive or None (all), got {n_images}.")
    chosen = list(range(VAL_SHARDS)) if chosen is None else list(chosen)
    lazily = (item for s in chosen for item in items(shards([s], folder, progress)))
    found = list(itertools.islice(lazily, n_images))
    if not found:
        raise TradeoffsError("the ClickMe shards held no records; delete them and download them again.")
    images, maps, labels = zip(*found)
    return xr.Dataset({"images": (("image", "y", "x", "channel"), np.stack(images)),
                       "heatmaps": (("image", "y", "x"), np.stack(maps)),
                       "labels": ("image", np.asarray(labels, dtype=np.int64))},
                      coords={"image": np.arange(len(images))}, attrs={"source": URL.format(shard="<i>")})


def alignment(model: Model, images: np.ndarray, labels: Sequence[int], human_maps: np.ndarray, *,
              batch_size: int = 16, device: str = "auto", progress: bool = True) -> np.ndarray:
    """Per-image ClickMe alignment of a differentiable model: Spearman(saliency, blurred human map) / ceiling.

    As Harmonization evaluates: each image is resized (bilinear, no crop) to the model's input size and normalised;
    saliency is |∂ logit_label / ∂ input| max over channels (`metrics.saliency`); the human map is blurred and compared
    at that size (`metrics.map_alignment`). images: uint8 [N,H,W,3]; human_maps: [N,h,w]; labels: ImageNet indices.
    The model score is the mean of the returned array.
    """
    from tqdm.auto import tqdm

    if getattr(model.module, "cpu_only", False) or not any(p.requires_grad for p in model.module.parameters()):
        raise TradeoffsError(f"{model.name} is not differentiable (a TFLite graph or frozen weights); ClickMe "
                             "saliency needs a PyTorch model, e.g. a timm model or efficientnet_lite0.")
    x = features.as_image_tensor(images)
    y = np.asarray(labels, dtype=np.int64)
    maps = np.asarray(human_maps)
    if not len(x) == len(y) == len(maps):
        raise TradeoffsError(f"{len(x)} images, {len(y)} labels and {len(maps)} human maps; "
                             "pass one of each per image.")
    dev = features.resolve_device(model, device)
    module = model.module.to(dev).eval()
    pre = model.preprocess
    mean = torch.tensor(pre.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=dev).view(1, 3, 1, 1)
    saliency = []
    for start in tqdm(range(0, len(x), batch_size), desc=f"{model.name} saliency", disable=not progress, leave=False):
        batch = x[start:start + batch_size].to(dev)
        batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        batch = F.interpolate(batch, size=pre.input_size, mode="bilinear", align_corners=False)
        saliency.append(metrics.saliency(module, (batch - mean) / std, y[start:start + batch_size]).cpu())
    return metrics.map_alignment(torch.cat(saliency), maps)
