"""Converters of the registry: turn a downloaded original into the file the offline data root stores.

Each converter takes (downloaded original, destination) and writes the destination; `registry.fetch` then checks the
result against the registered sha256 (or records its hash on first use where the registry says the conversion is not
byte-reproducible).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import TradeoffsError

Fetch = Callable[[str], Path]  # the registry's `fetch`, passed to every converter for those reading a second file

CIFAR10_JPEG = {"quality": 75, "subsampling": 2}  # Pillow settings of the re-encode (cifar10/SOURCES.md: q75, 4:2:0)


def _jpeg_q95(src: Path, dst: Path, fetch: Fetch) -> None:
    """PNG → JPEG as stored in the offline root: Pillow, quality 95, 4:4:4 (subsampling 0), optimize."""
    from PIL import Image

    with Image.open(src) as im:
        im.convert("RGB").save(dst, format="JPEG", quality=95, subsampling=0, optimize=True)


# ------------------------------------------------------------------ CIFAR-10: official python tarball -> JPEG-q75 npz
# The offline root's JPEGs carry Pillow's quality-75 headers (JFIF, tables, 4:2:0), so re-encoding the official pixels
# with Pillow may give the same bytes; that cannot be checked offline, so the registry pins a conversion's hash.


def read_cifar10_tarball(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 [N,32,32,3], labels int64 and class names of `split` from the official python tarball.

    Unpickles, so `path` must be hash-verified first (`registry.fetch` does that).
    """
    members = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    with tarfile.open(path, "r:gz") as tar:
        def load(member: str) -> dict:
            return pickle.load(tar.extractfile(f"cifar-10-batches-py/{member}"), encoding="bytes")  # noqa: S301
        batches = [load(m) for m in members]
        names = [n.decode() for n in load("batches.meta")[b"label_names"]]
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.concatenate([np.asarray(b[b"labels"], np.int64) for b in batches])
    return np.ascontiguousarray(images), labels, names


def cifar10_jpeg(pixels: np.ndarray) -> bytes:
    """One image as the JPEG the offline root was built from: Pillow, quality 75, 4:2:0 chroma subsampling."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", **CIFAR10_JPEG)
    return buf.getvalue()


def _decode(jpeg: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("RGB"))


def _save_npz(dst: Path, **arrays: np.ndarray) -> None:
    with dst.open("wb") as f:  # a file object: np.savez_compressed would append ".npz" to another suffix
        np.savez_compressed(f, **arrays)


def _cifar10_test_npz(src: Path, dst: Path, fetch: Fetch) -> None:
    """`cifar10/test.npz`: the test images JPEG-encoded as `cifar10_jpeg` and decoded back with Pillow."""
    images, labels, names = read_cifar10_tarball(src, "test")
    decoded = np.stack([_decode(cifar10_jpeg(im)) for im in images])
    _save_npz(dst, images=decoded, labels=labels, class_names=np.array(names))


def _cifar10_train_jpeg_npz(src: Path, dst: Path, fetch: Fetch) -> None:
    """`cifar10/train_jpeg.npz`: the training images as `cifar10_jpeg` bytes back to back, with offsets."""
    images, labels, names = read_cifar10_tarball(src, "train")
    jpegs = [cifar10_jpeg(im) for im in images]
    offsets = np.concatenate([[0], np.cumsum([len(j) for j in jpegs])]).astype(np.int64)
    _save_npz(dst, jpeg=np.frombuffer(b"".join(jpegs), np.uint8), offsets=offsets, labels=labels,
              class_names=np.array(names))


# ------------------------------------------------------------------ model-vs-human: 16-class ImageNet indices


def mvh_16class_indices(src: Path) -> dict[str, list[int]]:
    """`HumanCategories.<class>_indices` of model-vs-human's `human_categories.py`, parsed with `ast` (not run)."""
    tree = ast.parse(src.read_text())
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "HumanCategories"), None)
    found = {}
    for node in cls.body if cls else []:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.endswith("_indices"):
                found[name.removesuffix("_indices")] = [int(i) for i in ast.literal_eval(node.value)]
    if len(found) != 16:
        raise TradeoffsError(f"{src} defines {len(found)} HumanCategories.<class>_indices, not 16; the upstream "
                             "file changed, use the offline data root's model-vs-human/helper copy.")
    return dict(sorted(found.items()))


def _mvh_16class_json(src: Path, dst: Path, fetch: Fetch) -> None:
    """`{class: [indices]}`, one class a line, classes sorted."""
    lines = [f" {json.dumps(c)}: {json.dumps(ix)}" for c, ix in mvh_16class_indices(src).items()]
    dst.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def _mvh_16class_csv(src: Path, dst: Path, fetch: Fetch) -> None:
    """Columns category16, imagenet_index, wnid, imagenet_name (all synonyms, from `imagenet_categories.txt`)."""
    lines = fetch("model-vs-human/helper/imagenet_categories.txt").read_text().splitlines()
    wnid_names = [line.split(" ", 1) for line in lines if line.strip()]
    with dst.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("category16", "imagenet_index", "wnid", "imagenet_name"))
        for category, indices in mvh_16class_indices(src).items():
            writer.writerows((category, i, *wnid_names[i]) for i in sorted(indices))


CONVERTERS: dict[str, Callable[[Path, Path, Fetch], None]] = {
    "jpeg_q95": _jpeg_q95, "cifar10_test_npz": _cifar10_test_npz, "cifar10_train_jpeg_npz": _cifar10_train_jpeg_npz,
    "mvh_16class_json": _mvh_16class_json, "mvh_16class_csv": _mvh_16class_csv}
