"""The `full` profile as a Colab user meets it, rehearsed offline: every notebook runs its `full` code path at
miniature scale with an empty data root, downloading from a local HTTP server that serves each file at its URL path.

The server holds the offline data root's copies of pinned downloads, and files made here where we hold no original
(a BAPPS 2AFC archive, a ClickMe shard, model-vs-human's `human_categories.py`, an ImageNet-style train folder).
Files whose original we do not hold and whose hash is fixed (the CIFAR-10 tarball, the cue-conflict PNGs) are put
into the data root beforehand: their loaders' download paths are tested in tests/test_registry.py. The Hugging Face
hub is unreachable, so the timm models' "pretrained" weights are random weights made here and laid out as a Hugging
Face cache (`HF_HUB_CACHE`, `HF_HUB_OFFLINE=1`): timm loads them through its own pretrained path.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr
from PIL import Image
from tfrecord.writer import TFRecordWriter

from tradeoffs import claims, data, registry, run
from tradeoffs.chapters.score_model import scoring_profile
from tradeoffs.clickme import URL as CLICKME_URL

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.data]
PRESEEDED = ("cifar10/test.npz", "cifar10/train_jpeg.npz", "model-vs-human/stimuli/cue-conflict/")
TIMM = "resnet18"  # a timm zoo model: "pretrained" weights made here (hub unreachable)
SCORED = "mobilenetv3_small_050"  # the model the score notebook scores (pretrained, from the test-made hub cache)
TFLITE = "mobilenet_v1_0.25_128_quant"  # an offline ImageNet model, downloaded from the mirror
OFFLINE = [TFLITE, "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant"]  # enough points for the fits


def _served_path(url: str) -> str:
    return url.split("://", 1)[1]


def _png(rng: np.random.Generator, side: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _bapps_archive(dest: Path) -> None:
    """A twoafc_val.tar.gz laid out as the real one: val/<subset>/{ref,p0,p1,judge}/<id>.{png,npy}."""
    rng = np.random.default_rng(0)
    with tarfile.open(dest, "w:gz") as tar:
        for subset in ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"):
            for i in range(3):
                for kind in ("ref", "p0", "p1"):
                    buf = io.BytesIO()
                    _png(rng, 64).save(buf, format="PNG")
                    _add(tar, f"val/{subset}/{kind}/{i:06d}.png", buf.getvalue())
                buf = io.BytesIO()
                np.save(buf, np.array([rng.uniform()], np.float32))
                _add(tar, f"val/{subset}/judge/{i:06d}.npy", buf.getvalue())


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _clickme_shard(dest: Path, n: int = 6) -> None:
    rng = np.random.default_rng(1)

    def jpeg(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="JPEG", quality=95)
        return buf.getvalue()

    writer = TFRecordWriter(str(dest))
    for i in range(n):
        heat = np.zeros((256, 256), np.uint8)
        heat[32 * i: 32 * i + 64, 100:180] = 255
        writer.write({"image": (jpeg(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)), "byte"),
                      "heatmap": (jpeg(heat), "byte"), "label": (int(rng.integers(1000)), "int")})
    writer.close()


def _human_categories(src: Path, dest: Path) -> None:
    """model-vs-human's human_categories.py as far as the converter reads it, from the registered index lists."""
    lines = ["class HumanCategories(object):"]
    lines += [f"    {name}_indices = {indices}" for name, indices in json.loads(src.read_text()).items()]
    dest.write_text("\n".join(lines) + "\n")


def _imagenet_folder(root: Path, classes: int = 4, per_class: int = 6) -> Path:
    rng = np.random.default_rng(2)
    for c in range(classes):
        (root / f"n{c:08d}").mkdir(parents=True)
        for i in range(per_class):
            _png(rng, 80).convert("RGB").save(root / f"n{c:08d}" / f"img_{i}.JPEG", format="JPEG")
    return root


def build_mirror(served: Path, data_root: Path) -> None:
    """Lay out under `served` (at their URL paths, host/path) every download the notebooks may make."""
    for e in registry.entries():
        if not e.url or e.packaged or e.source:
            continue
        target = served / _served_path(e.url)
        if e.converter and e.converter.startswith("mvh_16class"):
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                _human_categories(data_root / "model-vs-human/helper/16class_imagenet_indices.json", target)
        elif not e.converter and (data_root / e.path).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(data_root / e.path)
    bapps = served / _served_path(data.BAPPS_URL)
    bapps.parent.mkdir(parents=True)
    _bapps_archive(bapps)
    shard = served / _served_path(CLICKME_URL.format(shard=0))
    shard.parent.mkdir(parents=True)
    _clickme_shard(shard)


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 serving `folder`; yields its base URL."""
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[str]:
    """The local HTTP server with every download at its URL path; yields its base URL."""
    served = tmp_path_factory.mktemp("mirror")
    build_mirror(served, data_root)
    with serve(served) as base:
        yield base


def hub_cache(folder: Path, names: list[str]) -> None:
    """Random weights for each timm model, laid out as `hf_hub_download` leaves them in a Hugging Face cache."""
    import timm
    import torch
    from safetensors.torch import save_file

    for name in names:
        torch.manual_seed(0)
        module = timm.create_model(name, pretrained=False)
        base = folder / f"models--{module.pretrained_cfg['hf_hub_id'].replace('/', '--')}"
        commit = "0" * 40
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text(commit)
        (base / "snapshots" / commit).mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in module.state_dict().items()},
                  str(base / "snapshots" / commit / "model.safetensors"))


def preseed(root: Path, data_root: Path) -> None:
    """Put the files whose originals we do not hold (fixed hashes) into the empty data root `root`."""
    for name in PRESEEDED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name.rstrip("/")).symlink_to(data_root / name.rstrip("/"))


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory, mirror: str, data_root: Path) -> Path:
    """Every notebook executed on `full` at miniature scale against the mirror; returns the site folder."""
    site = tmp_path_factory.mktemp("full")
    root = site / "data"
    preseed(root, data_root)
    imagenet = _imagenet_folder(site / "imagenet")
    bapps = site / "bapps"
    params = miniature(bapps, imagenet)
    hub_cache(site / "hub", [TIMM, SCORED])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRADEOFFS_DATA", str(root))
        mp.setenv("TRADEOFFS_MIRROR", mirror)
        mp.setenv("HF_HUB_CACHE", str(site / "hub"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRADEOFFS_RESULTS", str(site / "results"))
        mp.setenv("TRADEOFFS_CACHE", str(site / "cache"))
        mp.delenv("TRADEOFFS_RECOMPUTE", raising=False)
        for name in run.notebooks(REPO / "notebooks"):
            run.execute(name, REPO / "notebooks", site / "executed", "full", cwd=REPO, extra=params[name])
    return site


def miniature(bapps: Path, imagenet: Path) -> dict[str, dict]:
    """Per notebook, the parameters that shrink its `full` run to seconds while keeping every code path."""
    cifar = dict(cifar_models=["cifar10_resnet20"])
    return {
        "human_alignment": dict(models=OFFLINE, random_models=["mobilenetv3_small_050"], timm_models=[TIMM],
                                n_images={"cue-conflict": 16, "edge": 8, "silhouette": 8}, n_cifar=200,
                                n_clickme=4, **cifar),
        "inverted_u": dict(n_eval=200, n_reference=100, n_query=100, bapps_models=[TIMM], bapps_root=str(bapps),
                           imagenet_models=OFFLINE, mvh_images=8, n_boot=50, **cifar),
        "early_stopping": dict(models=["cifar10_resnet8"], n_train=200, epochs=2, seeds=[0], n_eval=200,
                               bapps_root=str(bapps)),
        "dataset_correlation": dict(models=[*OFFLINE, TIMM], baselines=[TIMM], n_train=40, n_val=20, n_test=40,
                                    finetune=True, finetune_models=[TIMM], epochs=1),
        "anynetx_subsets": dict(n_architectures=4, n_replicates=1, epochs=1, source=f"folder:{imagenet}",
                                subsets=[2, 4], n_train=4, n_test=2, targets=[["cifar10", 40, 20]], batch_size=4,
                                scheduler="local", n_workers=1),
        "performance": dict(plan="tiny"),
        "score_model": dict(model=SCORED, bapps=str(bapps)),
    }


@pytest.mark.parametrize("name", run.notebooks(REPO / "notebooks"))
def test_full_path_runs_and_labels_its_results(rehearsal: Path, name: str) -> None:
    nb = nbformat.read(rehearsal / "executed" / f"{name}.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters["profile"] == "full"
    profile = scoring_profile("full", None) if name == "score_model" else "full"  # scoring: the reference sizes
    files = sorted((rehearsal / "results").glob(f"{name}_*_{profile}.nc"))
    assert files, f"{name} wrote no results on full"
    for path in files:
        with xr.open_dataset(path) as ds:
            assert ds.attrs["profile"] == profile


def test_downloads_came_from_the_mirror_and_were_pinned(rehearsal: Path) -> None:
    root = rehearsal / "data"
    assert (root / "coral-tflite" / f"{TFLITE}.tflite").is_file(), "a registered model downloaded from the mirror"
    assert (root / "model-vs-human/helper/16class_imagenet_indices.json").is_file(), "converted from the download"
    assert (rehearsal / "bapps" / "twoafc_val.tar.gz.sha256").is_file(), "BAPPS pinned on first use"
    assert (root / "clickme" / "val-0.tfrecords.sha256").is_file(), "ClickMe shard pinned on first use"
    assert not list(root.rglob("*.part")) and not (root / ".downloads").exists(), "no half-written file left"


def test_timm_models_came_through_the_pretrained_path(rehearsal: Path) -> None:
    with xr.open_dataset(rehearsal / "results" / "human_alignment_observers_full.nc") as obs:
        sources = obs["source"].values.astype(str).tolist()
    assert any(f"{TIMM} (hf-hub:timm/{TIMM}." in s for s in sources), sources


def test_every_claim_is_rehearsed() -> None:
    assert set(claims.CLAIMS) <= set(miniature(Path("b"), Path("i"))), "a claim without a miniature full run"
    assert os.environ.get("TRADEOFFS_MIRROR") is None, "the mirror is set only inside the rehearsal"
