"""ClickMe shards read without TensorFlow (files written by the `tfrecord` package's writer), damage caught, and a
model's saliency alignment on maps made here."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_observers import Linear, make_model
from tfrecord.writer import TFRecordWriter

from tradeoffs import clickme, metrics
from tradeoffs.errors import TradeoffsError


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_shard(path, examples: list[dict]) -> None:
    writer = TFRecordWriter(str(path))
    for ex in examples:
        writer.write(ex)
    writer.close()


def write_clickme_shard(folder, n: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[:256, :256]
    images = np.stack([np.stack([x, y, (x + y) // 2 + 40 * i], -1) % 256 for i in range(n)]).astype(np.uint8)
    maps = np.zeros((n, 256, 256), np.uint8)
    for i in range(n):
        maps[i, 32 * i: 32 * i + 64, 100:180] = 255
    write_shard(folder / "val-0.tfrecords", [{"image": (jpeg(images[i]), "byte"), "heatmap": (jpeg(maps[i]), "byte"),
                                               "label": (10 * i + 1, "int")} for i in range(n)])
    return images, maps


def test_masked_crc_is_tfrecords():
    assert clickme.masked_crc(b"abc") == int.from_bytes(TFRecordWriter.masked_crc(b"abc"), "little")


def test_parse_example_hand_encoded():
    # Example{features{feature{key "label" value{int64_list{value: 7}}}}}, bytes written out by hand
    record = bytes([0x0A, 0x10, 0x0A, 0x0E, 0x0A, 0x05]) + b"label" + bytes([0x12, 0x05, 0x1A, 0x03, 0x0A, 0x01, 0x07])
    assert clickme.parse_example(record) == {"label": [7]}
    with pytest.raises(TradeoffsError, match="not a tf.train.Example"):
        clickme.parse_example(b"\xff\xff\xff")


def test_records_and_damage(tmp_path):
    path = tmp_path / "x.tfrecords"
    write_shard(path, [{"label": (-3, "int"), "f": ([0.5, -2.0], "float")}, {"b": (b"three" * 100, "byte")}])
    parsed = [clickme.parse_example(r) for r in clickme.records(path)]
    assert parsed == [{"label": [-3], "f": [0.5, -2.0]}, {"b": [b"three" * 100]}]
    good = path.read_bytes()
    for where, what in ((0, "damaged"), (14, "damaged"), (len(good) - 1, "damaged")):
        raw = bytearray(good)
        raw[where] ^= 1  # a length, a payload byte, the last checksum
        path.write_bytes(bytes(raw))
        with pytest.raises(TradeoffsError, match=what):
            list(clickme.records(path))
    for cut in (5, len(good) - 3):
        path.write_bytes(good[:cut])
        with pytest.raises(TradeoffsError, match="truncated"):
            list(clickme.records(path))


def test_val_reads_a_shard_made_here(tmp_path):
    images, maps = write_clickme_shard(tmp_path, 3)
    ds = clickme.val(2, chosen=[0], folder=tmp_path, progress=False)
    assert ds["images"].shape == (2, 256, 256, 3) and ds["heatmaps"].shape == (2, 256, 256)
    assert ds["images"].dtype == np.uint8 and list(ds["labels"].values) == [1, 11]
    assert np.abs(ds["heatmaps"].values.astype(int) - maps[:2]).mean() < 3  # JPEG round trip
    assert np.abs(ds["images"].values.astype(int) - images[:2]).mean() < 3
    assert clickme.val(chosen=[0], folder=tmp_path, progress=False).sizes["image"] == 3
    assert (tmp_path / "val-0.tfrecords.sha256").is_file()  # no published checksum: pinned on first use
    write_shard(tmp_path / "val-0.tfrecords", [{"label": (1, "int")}])
    with pytest.raises(TradeoffsError, match="first use recorded"):
        clickme.val(chosen=[0], folder=tmp_path, progress=False)
    (tmp_path / "val-0.tfrecords.sha256").unlink()  # what the message says to do for a new download
    with pytest.raises(TradeoffsError, match="expected image, heatmap"):
        clickme.val(chosen=[0], folder=tmp_path, progress=False)


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(TradeoffsError, match="val-3.tfrecords") as err:
        clickme.shards([3], folder=tmp_path, progress=False)
    assert "\n" not in str(err.value) and "full" in str(err.value)
    with pytest.raises(TradeoffsError, match="do not exist"):
        clickme.shards([clickme.VAL_SHARDS], folder=tmp_path)
    with pytest.raises(TradeoffsError, match="n_images"):
        clickme.val(0, folder=tmp_path)


def blob(size: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))


def test_alignment_on_maps_made_here():
    w = torch.zeros(2, 3, 32, 32, dtype=torch.float32)
    w[0] = torch.as_tensor(blob(32, 8, 8, 4.0), dtype=torch.float32)  # the class-0 logit reads the top-left corner
    w[1] = torch.as_tensor(blob(32, 24, 24, 4.0), dtype=torch.float32)
    model = make_model(Linear(w), size=32, num_classes=2)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 48, 48, 3), dtype=np.uint8)
    same = np.stack([blob(64, 16, 16, 8.0)] * 2)  # human maps at another resolution, same place
    other = np.stack([blob(64, 48, 48, 8.0)] * 2)
    scores = clickme.alignment(model, images, [0, 0, 0, 1], np.concatenate([same, other]), batch_size=3,
                               progress=False)
    assert scores.shape == (4,)
    assert (scores[:2] > 0.5).all()  # saliency where people clicked
    assert scores[2] < 0  # class 0 looks top-left, people clicked bottom-right
    assert scores[3] > 0.5  # class 1 looks bottom-right too
    saliency = torch.stack([w[k].abs().amax(0) for k in (0, 0, 0, 1)])
    expected = metrics.map_alignment(saliency, np.concatenate([same, other]))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_alignment_refusals():
    model = make_model(Linear(torch.ones(2, 3, 8, 8)), size=8, num_classes=2)
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(TradeoffsError, match="one of each"):
        clickme.alignment(model, images, [0], np.ones((2, 8, 8)), progress=False)
    model.module.cpu_only = True  # what TFLite wrappers say about themselves
    with pytest.raises(TradeoffsError, match="not differentiable"):
        clickme.alignment(model, images, [0, 1], np.ones((2, 8, 8)), progress=False)
