"""Dataset loaders: arrays, DataFrames and labelled xarray Datasets, every external file through `registry.fetch`.

Image sets (`cifar10`, `fashion_mnist`) come as an `xarray.Dataset` with variables ``images``
(uint8, dims ``image, y, x[, channel]``) and ``labels`` (int64, dim ``image``), coordinate ``class_name``
(dim ``class``) and attrs ``split`` and ``source`` (which copy was read).
Human trials use one schema for humans and models (`TRIAL_COLUMNS`).
"""

from __future__ import annotations

import difflib
import gzip
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import registry, results
from .convert import read_cifar10_tarball
from .errors import TradeoffsError

TRIAL_COLUMNS = ("dataset", "observer", "condition", "image", "category", "texture", "response", "rt", "trial")
STIMULUS_SETS = ("cue-conflict", "edge", "silhouette")  # model-vs-human datasets whose images are registered
_MVH = "model-vs-human"
_CIFAR_OFFICIAL = "cifar10/cifar-10-python.tar.gz"
_CIFAR_JPEG = {"test": "cifar10/test.npz", "train": "cifar10/train_jpeg.npz"}
_JPEG_SOURCE = "jpeg-q75 re-encode (lossy; about 10 points lower accuracy)"
_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot")
BAPPS_URL = "https://perceptual-similarity.s3.us-west-2.amazonaws.com/dataset/twoafc_val.tar.gz"


def _choose(name: str, options: Sequence[str], what: str) -> str:
    """`name` if it is one of `options`, else a one-line error listing the closest options."""
    if name in options:
        return name
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.4) or list(options)[:8]
    raise TradeoffsError(f"Unknown {what} {name!r}; choose from {', '.join(close)}.")


def _image_dataset(images: np.ndarray, labels: np.ndarray, names: Sequence[str], split: str, source: str) -> xr.Dataset:
    dims = ("image", "y", "x", "channel")[: images.ndim]
    return xr.Dataset({"images": (dims, images), "labels": ("image", labels.astype(np.int64))},
                      coords={"image": np.arange(len(labels)), "class_name": ("class", list(names))},
                      attrs={"split": split, "source": source})


# ------------------------------------------------------------------ CIFAR-10 and CIFAR-10H


def cifar10(split: str = "test") -> xr.Dataset:
    """CIFAR-10 `split` ("test"/"train"), official order: images uint8 [N,32,32,3], labels, class_name.

    Reads the official `cifar10/cifar-10-python.tar.gz` (lossless; attrs source "official") when it is in the data
    root or neither copy is (then it is downloaded); otherwise the offline root's JPEG-q75 rebuild
    (`cifar10/test.npz`, `cifar10/train_jpeg.npz`), whose decoded training images are cached as .npy.
    """
    split = _choose(split, ("test", "train"), "CIFAR-10 split")
    root = registry.data_root()
    if (root / _CIFAR_OFFICIAL).is_file() or not (root / _CIFAR_JPEG[split]).is_file():
        return _image_dataset(*read_cifar10_tarball(registry.fetch(_CIFAR_OFFICIAL), split), split, "official")
    path = registry.fetch(_CIFAR_JPEG[split])
    with np.load(path) as z:
        labels, names = z["labels"], [str(n) for n in z["class_names"]]
        images = z["images"] if split == "test" else _cifar10_train_pixels(z, results.file_digest(path))
    return _image_dataset(images, labels, names, split, _JPEG_SOURCE)


def _cifar10_train_pixels(z: np.lib.npyio.NpzFile, sha256: str) -> np.ndarray:
    """Decoded training JPEGs, cached as .npy keyed by the source file's hash (`sha256`)."""
    path = results.cache_dir() / "cifar10" / f"train_jpeg_{sha256[:16]}.npy"
    if path.is_file():
        return np.load(path)
    images = decode_jpegs(z["jpeg"], z["offsets"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with tmp.open("wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, images)
    os.replace(tmp, path)
    return images


def decode_jpegs(buffer: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode JPEGs stored back to back (`buffer[offsets[i]:offsets[i+1]]`) into uint8 [N,H,W,3] with Pillow."""
    from PIL import Image

    data = memoryview(np.ascontiguousarray(buffer, dtype=np.uint8))
    out = None
    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        with Image.open(io.BytesIO(data[a:b])) as im:
            pixels = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        if out is None:
            out = np.empty((len(offsets) - 1, *pixels.shape), np.uint8)
        out[i] = pixels
    if out is None:
        raise TradeoffsError("decode_jpegs got no images (offsets needs at least 2 entries).")
    return out


def cifar10h() -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10H human label distributions: (probs float64 [10000,10], counts int64 [10000,10]), test-set order."""
    probs = np.load(registry.fetch("cifar10h/cifar10h-probs.npy"))
    counts = np.load(registry.fetch("cifar10h/cifar10h-counts.npy"))
    return probs, counts


# ------------------------------------------------------------------ Fashion-MNIST


def fashion_mnist(split: str = "test") -> xr.Dataset:
    """Fashion-MNIST `split` ("test"/"train"): images uint8 [N,28,28], labels, class_name.

    Reads the Debian package `dataset-fashion-mnist` (apt verifies it; its .gz files are re-compressed, so their
    bytes differ from the upstream ones while the idx content is the same) or downloads the registered originals.
    """
    split = _choose(split, ("test", "train"), "Fashion-MNIST split")
    stem = "t10k" if split == "test" else "train"
    arrays, sources = [], set()
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{stem}-{kind}-ubyte.gz"
        debian = _FASHION_DIR / name
        if debian.is_file():
            path, source = debian, f"Debian dataset-fashion-mnist ({_FASHION_DIR})"
        else:
            try:
                path, source = registry.fetch(f"fashion-mnist/{name}"), "official download"
            except TradeoffsError as err:
                raise TradeoffsError(f"Fashion-MNIST {name} not found: `apt-get install dataset-fashion-mnist` "
                                     f"(puts it in {_FASHION_DIR}) or go online ({err})") from err
        arrays.append(_read_idx(path))
        sources.add(source)
    images, labels = arrays
    if len(images) != len(labels) or images.shape[1:] != (28, 28):
        raise TradeoffsError(f"Fashion-MNIST {split} files disagree ({images.shape} images, {labels.shape} labels); "
                             "reinstall them.")
    return _image_dataset(images, labels, _FASHION_CLASSES, split, "; ".join(sorted(sources)))


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip): big-endian header magic 0x000008<ndim>, then ndim uint32 sizes, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    if raw[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 3:
        raise TradeoffsError(f"{path} is not a uint8 idx file; reinstall or delete it.")
    shape = tuple(np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise TradeoffsError(f"{path} holds {data.size} bytes, header says {shape}; reinstall or delete it.")
    return data.reshape(shape)


# ------------------------------------------------------------------ model-vs-human (Geirhos et al.)


def human_datasets() -> list[str]:
    """The 17 model-vs-human datasets with human trials."""
    prefix = f"{_MVH}/raw-data/"
    return sorted({e.path[len(prefix):].split("/")[0] for e in registry.entries() if e.path.startswith(prefix)})


def human_trials(datasets: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Human trials of model-vs-human (all 17 datasets by default), one row per trial, columns `TRIAL_COLUMNS`."""
    available = human_datasets()
    names = [datasets] if isinstance(datasets, str) else available if datasets is None else list(datasets)
    chosen = [_choose(d, available, "model-vs-human dataset") for d in names]
    frames = [_read_trials(e.path, d) for d in chosen for e in registry.entries()
              if e.path.startswith(f"{_MVH}/raw-data/{d}/")]
    return pd.concat(frames, ignore_index=True)


def _read_trials(name: str, dataset: str) -> pd.DataFrame:
    raw = pd.read_csv(registry.fetch(name), dtype=str, keep_default_na=False)
    raw.columns = raw.columns.str.lower()  # the parametric datasets spell `Session`
    image = short_image_id(raw["imagename"])
    return pd.DataFrame({
        "dataset": dataset, "observer": raw["subj"], "condition": raw["condition"], "image": image,
        "category": raw["category"], "texture": cue_conflict_texture(image) if dataset == "cue-conflict" else "",
        "response": raw["object_response"], "rt": raw["rt"].astype(float), "trial": raw["trial"].astype(np.int64)},
        columns=list(TRIAL_COLUMNS)).astype({c: "str" for c in TRIAL_COLUMNS[:7]})


def short_image_id(imagenames: pd.Series) -> pd.Series:
    """model-vs-human `get_short_imagename`: last `_` part, or the last two when the second-to-last starts "n0"."""
    parts = imagenames.astype(str).str.split("_")
    last, second = parts.str[-1], parts.str[-2].astype(object).fillna("").astype(str)  # no "_": no second part
    return last.where(~second.str.startswith("n0"), second + "_" + last)


def cue_conflict_texture(images: pd.Series) -> pd.Series:
    """Texture class of cue-conflict images: last `-` token of the id, without extension and digits."""
    return images.str.rsplit(".", n=1).str[0].str.split("-").str[-1].str.replace(r"\d+", "", regex=True)


def mvh_stimuli(dataset: str) -> pd.DataFrame:
    """Stimuli of a model-vs-human dataset with registered images: columns image, category, texture, path.

    `image` is the short id used in the trials (``<stem>.png``, also for the JPEG-stored cue-conflict images).
    """
    dataset = _choose(dataset, STIMULUS_SETS, "stimulus set (the others' images are not obtainable)")
    prefix = f"{_MVH}/stimuli/{dataset}"
    folder = registry.fetch_folder(prefix)
    rel = pd.Series(sorted(e.path[len(prefix) + 1:] for e in registry.entries() if e.path.startswith(prefix + "/")))
    image = rel.str.split("/").str[-1].str.rsplit(".", n=1).str[0] + ".png"
    return pd.DataFrame({"image": image, "category": rel.str.split("/").str[0],
                         "texture": cue_conflict_texture(image) if dataset == "cue-conflict" else "",
                         "path": [str(folder / r) for r in rel]})


def load_images(paths: Iterable[str | Path], size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Images as uint8 [N,H,W,3] RGB; `size` (side or (H, W)) resizes bilinearly, else all must share one size."""
    from PIL import Image

    hw = (size, size) if isinstance(size, int) else size
    arrays = []
    for p in paths:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        arrays.append(np.asarray(rgb.resize(hw[::-1], Image.Resampling.BILINEAR) if hw else rgb))
    if not arrays:
        raise TradeoffsError("load_images got no paths; pass at least one image file.")
    if len({a.shape for a in arrays}) > 1:
        raise TradeoffsError("load_images got images of different sizes; pass size= to resize them.")
    return np.stack(arrays)


def digits() -> xr.Dataset:
    """The UCI optical-recognition digits shipped inside scikit-learn (1,797 images, 8×8, 0-16 scaled to uint8 0-255)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.round(raw.images * (255 / 16)).astype(np.uint8)
    return _image_dataset(images, raw.target, [str(i) for i in range(10)], "all", "scikit-learn load_digits (UCI)")


def image_folder(root: str | Path, n_per_class: int, size: int, classes: Sequence[str] | None = None,
                 seed: int = 0) -> xr.Dataset:
    """`n_per_class` random images of each class folder `root/<class>/*` (ImageNet layout), resized to `size`².

    `classes` picks class folders by name (default: all, sorted). Loads everything into memory as uint8.
    """
    root = Path(root)
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not found:
        raise TradeoffsError(f"no class folders under {root}; point it at an ImageNet-style split (root/<class>/<image>), "
                             "e.g. the ILSVRC2012 train folder, which you download from image-net.org yourself.")
    classes = list(classes) if classes is not None else found
    missing = [c for c in classes if c not in found]
    if missing:
        raise TradeoffsError(f"class folder(s) {missing[:4]} not under {root}; it has {found[:4]} ... ({len(found)}).")
    rng, paths, labels = np.random.default_rng(seed), [], []
    for i, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.is_file())
        if len(files) < n_per_class:
            raise TradeoffsError(f"{root / name} has {len(files)} images, fewer than n_per_class={n_per_class}.")
        paths += [files[j] for j in np.sort(rng.choice(len(files), n_per_class, replace=False))]
        labels += [i] * n_per_class
    return _image_dataset(load_images(paths, size), np.array(labels), classes, root.name, str(root))


def to_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N,H,W] or [N,H,W,3] -> uint8 [N,size,size,3] (grey replicated; bilinear antialiased resize if needed)."""
    import torch
    import torch.nn.functional as F

    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise TradeoffsError(f"to_rgb wants uint8 [N,H,W] or [N,H,W,3], got {images.dtype} {images.shape}.")
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = (x[..., None].expand(*x.shape, 3) if images.ndim == 3 else x).permute(0, 3, 1, 2)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def class_subset(ds: xr.Dataset, classes: Sequence[int], n_per_class: int, seed: int = 0) -> xr.Dataset:
    """`n_per_class` random images of each of `classes`, labels renumbered 0..k-1 in the order given."""
    labels, rng, keep = ds["labels"].values, np.random.default_rng(seed), []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < n_per_class:
            raise TradeoffsError(f"class {c} has {len(idx)} images, fewer than n_per_class={n_per_class}; lower it.")
        keep.append(np.sort(rng.choice(idx, n_per_class, replace=False)))
    sub = ds.isel(image=np.concatenate(keep))
    mapping = np.full(labels.max() + 1, -1)
    mapping[list(classes)] = np.arange(len(classes))
    sub["labels"] = ("image", mapping[sub["labels"].values])
    names = ds["class_name"].values
    return sub.drop_vars("class_name").assign_coords(class_name=("class", [str(names[c]) for c in classes]))


def imagenet_16class_indices() -> dict[str, list[int]]:
    """The 16 model-vs-human classes → their ImageNet-1k indices (0-based; 207 classes in all)."""
    return json.loads(registry.fetch(f"{_MVH}/helper/16class_imagenet_indices.json").read_text())


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (first synonym of each; "crane", "maillot" occur twice)."""
    lines = registry.fetch(f"{_MVH}/helper/imagenet_categories.txt").read_text().splitlines()
    return [line.split(" ", 1)[1].split(",")[0].strip() for line in lines if line.strip()]


# ------------------------------------------------------------------ reference tables


def table_names() -> list[str]:
    """Names accepted by `table`, e.g. "timm/results-imagenet"."""
    return [e.path[len("tables/"):-len(".csv")] for e in registry.entries()
            if e.path.startswith("tables/") and e.path.endswith(".csv")]


def table(name: str) -> pd.DataFrame:
    """A reference CSV under `tables/` by name without folder prefix and suffix (e.g. "timm/results-imagenet")."""
    name = _choose(name, table_names(), "table")
    return pd.read_csv(registry.fetch(f"tables/{name}.csv"))


# ------------------------------------------------------------------ BAPPS 2AFC (Zhang et al. 2018)


def bapps_2afc(root: str | Path, subsets: str | Iterable[str] | None = None) -> pd.DataFrame:
    """BAPPS 2AFC val triplets under `root`/2afc/val/<subset>/{ref,p0,p1}/<id>.png with judge/<id>.npy.

    Columns: subset, id, ref, p0, p1 (paths), p (fraction of humans who judged p1 closer to ref).
    """
    val = Path(root) / "2afc" / "val"
    if not val.is_dir():
        raise TradeoffsError(f"No BAPPS 2AFC val set at {val}; get it with "
                             f"tradeoffs.data.download_bapps({str(root)!r}).")
    available = sorted(d.name for d in val.iterdir() if (d / "judge").is_dir())
    names = [subsets] if isinstance(subsets, str) else available if subsets is None else list(subsets)
    chosen = [_choose(s, available, "BAPPS subset") for s in names]
    rows = []
    for subset in chosen:
        folder = val / subset
        for judge in sorted((folder / "judge").glob("*.npy")):
            paths = [folder / kind / f"{judge.stem}.png" for kind in ("ref", "p0", "p1")]
            if missing := [p for p in paths if not p.is_file()]:
                raise TradeoffsError(f"BAPPS triplet incomplete: {missing[0]} is missing; re-extract the archive.")
            rows.append((subset, judge.stem, *map(str, paths), float(np.load(judge).ravel()[0])))
    if not rows:
        raise TradeoffsError(f"No judgments (judge/*.npy) under {val}; re-extract the archive.")
    return pd.DataFrame(rows, columns=["subset", "id", "ref", "p0", "p1", "p"])


def download_bapps(dest: str | Path, url: str = BAPPS_URL) -> Path:
    """Download and extract the BAPPS 2AFC val archive into `dest`/2afc/val (for the "full" profile); return `dest`.

    The URL is the one of richzhang/PerceptualSimilarity's `scripts/download_dataset_valonly.sh` (it replaced
    https://people.eecs.berkeley.edu/~rich.zhang/projects/2018_perceptual/dataset/twoafc_val.tar.gz).
    No hash of the archive is published, so it is downloaded with ``known_hash=None`` and pinned on first use
    (`registry.pin`: the sha256 seen is kept beside the archive and checked on every later download; a third-party
    pipeline pins 41486671b06de923e7ba277c4797d4d9d86d609863ba35ecdb576133f8b9d859, not verified here).
    """
    import pooch

    dest = Path(dest)
    pooch.retrieve(registry.download_url(url), known_hash=None, fname="twoafc_val.tar.gz", path=dest,
                   processor=pooch.Untar(extract_dir="2afc"), progressbar=True)
    registry.pin(dest / "twoafc_val.tar.gz")  # no published checksum: the hash of the first download is kept
    return dest
