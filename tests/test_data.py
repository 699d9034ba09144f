"""Loaders on the real offline data (marked `data`) and on small fakes written here (CIFAR tarball, BAPPS, idx)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tradeoffs import data, registry
from tradeoffs.errors import TradeoffsError


@pytest.fixture()
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable data root and cache; registry entries replaced by a test are restored afterwards."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("TRADEOFFS_DATA", str(root))
    monkeypatch.setenv("TRADEOFFS_CACHE", str(tmp_path / "cache"))
    index = registry._index()
    before = dict(index)
    yield root
    index.clear()
    index.update(before)


def _register(root: Path, name: str, payload: bytes, md5: bool = False) -> None:
    """Write `payload` as `name` under `root` and make the registry expect exactly it."""
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(payload)
    digest = "md5:" + hashlib.md5(payload).hexdigest() if md5 else hashlib.sha256(payload).hexdigest()
    registry._index()[name] = registry.Entry(name, digest, len(payload), "", "test", "test")


# ------------------------------------------------------------------ real data


@pytest.mark.data
def test_cifar10_test_set(data_root: Path) -> None:
    ds = data.cifar10("test")
    images, labels = ds["images"].values, ds["labels"].values
    assert images.shape == (10000, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [1000] * 10
    assert labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the known start of test_batch
    assert ds["class_name"].values[0] == "airplane" and ds.attrs["source"].startswith("jpeg-q75")


@pytest.mark.data
def test_cifar10h_majority_agrees_with_official_labels(data_root: Path) -> None:
    probs, counts = data.cifar10h()
    assert probs.shape == counts.shape == (10000, 10) and counts.dtype.kind == "i"
    np.testing.assert_allclose(probs, counts / counts.sum(1, keepdims=True))
    labels = data.cifar10("test")["labels"].values
    assert (probs.argmax(1) == labels).mean() > 0.98


@pytest.fixture(scope="module")
def trials(data_root: Path) -> pd.DataFrame:
    if not (data_root / "model-vs-human").is_dir():
        pytest.skip("model-vs-human is not in the data root")
    return data.human_trials()


@pytest.mark.data
def test_human_trials_schema(trials: pd.DataFrame) -> None:
    assert tuple(trials.columns) == data.TRIAL_COLUMNS
    assert len(trials) == 85120 and trials["dataset"].nunique() == 17
    assert trials.groupby("dataset").size()["cue-conflict"] == 12800
    answered = trials["response"] != "na"  # no response: rt is NaN in the CSVs
    assert trials.loc[answered, "rt"].between(0.1, 5).all() and trials.loc[~answered, "rt"].isna().all()
    assert trials["trial"].min() == 1
    colour = trials[trials["dataset"] == "colour"]
    assert colour["image"].str.match(r"n0\d+_\d+\.png").all() and set(colour["condition"]) == {"bw", "cr"}
    assert (trials.loc[trials["dataset"] != "cue-conflict", "texture"] == "").all()
    labels = set(data.imagenet_16class_indices())
    assert set(trials["category"]) == labels and set(trials["response"]) <= labels | {"na"}


@pytest.mark.data
def test_human_shape_bias_is_about_0_96(trials: pd.DataFrame) -> None:
    cc = trials[(trials["dataset"] == "cue-conflict") & (trials["category"] != trials["texture"])]
    assert len(cc) == 12000
    shape, texture = (cc["response"] == cc["category"]).sum(), (cc["response"] == cc["texture"]).sum()
    assert abs(shape / (shape + texture) - 0.959) < 0.01


@pytest.mark.data
@pytest.mark.parametrize(("dataset", "n"), [("cue-conflict", 1280), ("edge", 160), ("silhouette", 160)])
def test_every_trial_resolves_to_a_stimulus(trials: pd.DataFrame, dataset: str, n: int) -> None:
    stimuli = data.mvh_stimuli(dataset)
    assert len(stimuli) == n and stimuli["image"].is_unique
    shown = trials[trials["dataset"] == dataset]
    merged = shown.merge(stimuli, on=["category", "image"], how="left", suffixes=("", "_stim"))
    assert merged["path"].notna().all()
    assert (merged["texture"] == merged["texture_stim"]).all()
    assert set(stimuli["image"]) == set(shown["image"])
    assert all(Path(p).is_file() for p in stimuli["path"])


@pytest.mark.data
def test_load_images(data_root: Path) -> None:
    paths = data.mvh_stimuli("edge")["path"][:3]
    images = data.load_images(paths)
    assert images.shape == (3, 224, 224, 3) and images.dtype == np.uint8
    assert data.load_images(paths, size=(32, 48)).shape == (3, 32, 48, 3)
    with pytest.raises(TradeoffsError, match="no paths"):
        data.load_images([])


@pytest.mark.data
def test_imagenet_mappings(data_root: Path) -> None:
    indices = data.imagenet_16class_indices()
    flat = [i for v in indices.values() for i in v]
    assert len(indices) == 16 and len(flat) == len(set(flat)) == 207 and max(flat) < 1000
    names = data.imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[indices["airplane"][0]] == "airliner"


@pytest.mark.data
def test_tables(data_root: Path) -> None:
    results = data.table("timm/results-imagenet")
    assert {"model", "top1", "param_count"} <= set(results.columns) and len(results) > 1000
    with pytest.raises(TradeoffsError, match="timm/results-imagenet"):
        data.table("timm/results-imagnet")


def test_unknown_stimulus_set_and_dataset() -> None:
    with pytest.raises(TradeoffsError, match="silhouette"):
        data.mvh_stimuli("silhouete")
    with pytest.raises(TradeoffsError, match="cue-conflict"):
        data.human_trials(["cue-conflct"])


# ------------------------------------------------------------------ rules on strings


@settings(max_examples=25, deadline=None)
@given(st.from_regex(r"n0[0-9]{7}", fullmatch=True), st.integers(0, 99999), st.sampled_from(["c05", "0", "bw"]))
def test_short_id_keeps_imagenet_synset(wnid: str, number: int, condition: str) -> None:
    name = f"0001_cl_s01_{condition}_oven_40_{wnid}_{number}.png"
    assert data.short_image_id(pd.Series([name]))[0] == f"{wnid}_{number}.png"


def test_short_id_and_texture_of_cue_conflict() -> None:
    names = pd.Series(["0001_s5n_s01_0_bird_00_bird3-bird2.png", "0002_s5n_s01_0_car_00_car6-bottle1.png",
                       "0001_edg_s01_0_oven_00_oven10.png", "0001_ske_s01_0_dog_00_dog-4581-sketch-16.png"])
    ids = data.short_image_id(names)
    assert ids.tolist() == ["bird3-bird2.png", "car6-bottle1.png", "oven10.png", "dog-4581-sketch-16.png"]
    assert data.cue_conflict_texture(ids[:2]).tolist() == ["bird", "bottle"]


# ------------------------------------------------------------------ small fakes


def test_cifar10_prefers_the_official_tarball(fake_root: Path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, obj in (("test_batch", {b"data": raw, b"labels": [3, 8, 8, 0]}),
                            ("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})):
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    _register(fake_root, "cifar10/cifar-10-python.tar.gz", buf.getvalue(), md5=True)
    _register(fake_root, "cifar10/test.npz", b"never read when the official copy is present")
    ds = data.cifar10("test")
    assert ds.attrs["source"] == "official" and ds["labels"].values.tolist() == [3, 8, 8, 0]
    # CIFAR rows are channel planes (R 1024, G 1024, B 1024) of a 32x32 image
    pixel = 2 * 32 + 5  # row 2, column 5
    np.testing.assert_array_equal(ds["images"].values[1, 2, 5], raw[1, [pixel, 1024 + pixel, 2048 + pixel]])


def test_cifar10_train_jpeg_is_decoded_once_then_cached(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    jpegs = []
    for _ in range(3):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out, format="JPEG", quality=75)
        jpegs.append(out.getvalue())
    offsets = np.cumsum([0, *map(len, jpegs)])
    npz = io.BytesIO()
    np.savez(npz, jpeg=np.frombuffer(b"".join(jpegs), np.uint8), offsets=offsets, labels=np.array([6, 9, 9]),
             class_names=np.array([f"c{i}" for i in range(10)]))
    _register(fake_root, "cifar10/train_jpeg.npz", npz.getvalue())
    ds = data.cifar10("train")
    assert ds["images"].shape == (3, 32, 32, 3) and ds.attrs["source"].startswith("jpeg-q75")
    np.testing.assert_array_equal(ds["images"].values[2], np.asarray(Image.open(io.BytesIO(jpegs[2]))))
    monkeypatch.setattr(data, "decode_jpegs", lambda *a: pytest.fail("decoded again instead of using the cache"))
    np.testing.assert_array_equal(data.cifar10("train")["images"].values, ds["images"].values)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.random.default_rng(2).integers(0, 256, (10000, 28, 28), dtype=np.uint8)
    labels = np.arange(10000) % 10
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(images))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    monkeypatch.setattr(data, "_FASHION_DIR", tmp_path)
    ds = data.fashion_mnist("test")
    np.testing.assert_array_equal(ds["images"].values, images)
    assert ds["labels"].values.tolist()[:3] == [0, 1, 2] and ds["class_name"].values[9] == "Ankle boot"
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(labels[:5]))
    with pytest.raises(TradeoffsError, match="disagree"):
        data.fashion_mnist("test")


def test_fashion_mnist_missing_says_how_to_get_it(fake_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_FASHION_DIR", tmp_path / "absent")
    name = "fashion-mnist/t10k-images-idx3-ubyte.gz"
    e = registry.entry(name)
    registry._index()[name] = registry.Entry(name, e.sha256, e.size, "http://127.0.0.1:9/x.gz", e.licence, e.origin)
    with pytest.raises(TradeoffsError, match="apt-get install dataset-fashion-mnist") as err:
        data.fashion_mnist("test")
    assert "\n" not in str(err.value)


def _fake_bapps(root: Path, judgments: dict[str, list[float]]) -> None:
    rng = np.random.default_rng(3)
    for subset, ps in judgments.items():
        for i, p in enumerate(ps):
            for kind in ("ref", "p0", "p1"):
                (root / "2afc" / "val" / subset / kind).mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "2afc" / "val" / subset / kind / f"{i:06d}.png")
            (root / "2afc" / "val" / subset / "judge").mkdir(exist_ok=True)
            np.save(root / "2afc" / "val" / subset / "judge" / f"{i:06d}.npy", np.array([p], np.float32))


def test_bapps_2afc_reads_the_real_layout(tmp_path: Path) -> None:
    _fake_bapps(tmp_path, {"cnn": [0.0, 0.4, 1.0], "traditional": [0.8]})
    df = data.bapps_2afc(tmp_path)
    assert list(df.columns) == ["subset", "id", "ref", "p0", "p1", "p"]
    assert df["subset"].tolist() == ["cnn"] * 3 + ["traditional"]
    np.testing.assert_allclose(df["p"], [0.0, 0.4, 1.0, 0.8], rtol=1e-6)
    assert Path(df.loc[1, "p1"]) == tmp_path / "2afc/val/cnn/p1/000001.png"
    assert data.bapps_2afc(tmp_path, "traditional")["id"].tolist() == ["000000"]
    with pytest.raises(TradeoffsError, match="traditional"):
        data.bapps_2afc(tmp_path, ["tradtional"])
    (tmp_path / "2afc/val/cnn/p0/000002.png").unlink()
    with pytest.raises(TradeoffsError, match="000002.png is missing"):
        data.bapps_2afc(tmp_path)
    with pytest.raises(TradeoffsError, match="download_bapps"):
        data.bapps_2afc(tmp_path / "nowhere")


def test_short_image_id_without_an_underscore():
    """model-vs-human's own model CSVs name images without any underscore."""
    assert data.short_image_id(pd.Series(["0001.png", "dog12.jpg"])).tolist() == ["0001.png", "dog12.jpg"]
