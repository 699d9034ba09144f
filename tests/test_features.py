"""features.extract: equals a plain forward, labelled dims, cache hits, validation of images and layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tradeoffs import features, models, results
from tradeoffs.errors import TradeoffsError


@pytest.fixture(scope="module")
def resnet() -> models.Model:
    torch.manual_seed(0)
    return models.load("resnet18", weights="random")


def _images(n: int = 6, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_extract_equals_plain_forward_hooks(resnet: models.Model, isolated: Path) -> None:
    imgs = _images()
    ds = features.extract(resnet, imgs, ["layer1", "layer3", "logits"], batch_size=4, device="cpu", progress=False)
    x = resnet.preprocess(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)
    seen: dict[str, torch.Tensor] = {}
    hooks = [resnet.module.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, o))
             for n in ("layer1", "layer3")]
    with torch.inference_mode():
        logits = resnet.module(x)
    for h in hooks:
        h.remove()
    np.testing.assert_allclose(ds["layer1"].values, seen["layer1"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds["layer3"].values, seen["layer3"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds["logits"].values, logits.numpy(), rtol=1e-5, atol=1e-5)
    assert ds["layer1"].dims == ("image", "layer1.channel", "layer1.y", "layer1.x")
    assert ds["logits"].dims == ("image", "class")
    assert ds.sizes["image"] == 6 and ds.attrs["model"] == "resnet18"


def test_float_and_uint8_inputs_agree_and_pooling(resnet: models.Model, isolated: Path) -> None:
    imgs = _images(4)
    as_float = np.moveaxis(imgs, -1, 1).astype(np.float32) / 255
    a = features.extract(resnet, imgs, ["layer2"], device="cpu", pool="mean", progress=False)
    b = features.extract(resnet, as_float, ["layer2"], device="cpu", pool="mean", progress=False)
    np.testing.assert_allclose(a["layer2"].values, b["layer2"].values, rtol=1e-5, atol=1e-6)
    full = features.extract(resnet, imgs, ["layer2"], device="cpu", progress=False)
    np.testing.assert_allclose(a["layer2"].values, full["layer2"].values.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    assert a["layer2"].dims == ("image", "layer2.channel")


def test_chunks_are_filled_into_one_array_and_resume_from_cache(resnet: models.Model, isolated: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    imgs = _images(7)
    whole = features.extract(resnet, imgs, ["layer3", "logits"], pool="mean", device="cpu", cache=False, progress=False)
    monkeypatch.setattr(features, "CHUNK", 3)  # 3 + 3 + 1 images, each chunk its own cache entry
    first = features.extract(resnet, imgs, ["layer3", "logits"], pool="mean", device="cpu", progress=False)
    results.flush()  # chunks are written on a background thread
    assert len(list((isolated / "cache" / "features").rglob("*.pkl"))) == 3
    again = features.extract(resnet, imgs, ["layer3", "logits"], pool="mean", device="cpu", progress=False)
    for ds in (first, again):
        assert list(ds.image.values) == list(range(7)) and ds["layer3"].dims == whole["layer3"].dims
        for layer in ("layer3", "logits"):
            np.testing.assert_allclose(ds[layer].values, whole[layer].values, rtol=1e-5, atol=1e-6)


def test_batch_size_does_not_change_features(resnet: models.Model, isolated: Path) -> None:
    imgs = _images(5)
    one = features.extract(resnet, imgs, ["layer4"], batch_size=1, device="cpu", cache=False, progress=False)
    all_ = features.extract(resnet, imgs, ["layer4"], batch_size=5, device="cpu", cache=False, progress=False)
    np.testing.assert_allclose(one["layer4"].values, all_["layer4"].values, rtol=1e-4, atol=1e-5)


def test_second_run_is_a_cache_hit(resnet: models.Model, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imgs = _images(3)
    first = features.extract(resnet, imgs, ["layer1"], device="cpu", progress=False)
    calls = []

    def computed(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("recomputed")

    monkeypatch.setattr(features, "_run", computed)
    again = features.extract(resnet, imgs, ["layer1"], device="cpu", progress=False)
    assert not calls, "a rerun with the same inputs must not recompute"
    np.testing.assert_array_equal(first["layer1"].values, again["layer1"].values)
    with pytest.raises(RuntimeError, match="recomputed"):  # other images: a miss reaches the computation
        features.extract(resnet, imgs[::-1].copy(), ["layer1"], device="cpu", progress=False)
    assert calls == [1]


def test_changed_weights_change_the_key(resnet: models.Model) -> None:
    before = features.weights_key(resnet)
    with torch.no_grad():
        resnet.module.fc.bias.add_(1.0)
    try:
        assert features.weights_key(resnet) != before
    finally:
        with torch.no_grad():
            resnet.module.fc.bias.sub_(1.0)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8, 8), np.uint8), "4-D"),
    (np.zeros((0, 8, 8, 3), np.uint8), "no images"),
    (np.zeros((2, 8, 8, 4), np.uint8), r"\[N,H,W,3\]"),
    (np.full((2, 3, 8, 8), 2.0, np.float32), r"\[0,1\]"),
    (np.full((2, 3, 8, 8), np.nan, np.float32), r"\[0,1\]"),
    (np.zeros((2, 8, 8, 3), np.int32), "uint8 or floating"),
])
def test_bad_images_are_refused(resnet: models.Model, bad: np.ndarray, message: str) -> None:
    with pytest.raises(TradeoffsError, match=message):
        features.extract(resnet, bad, ["layer1"], device="cpu", progress=False)


def test_unknown_layer_suggests_close_names(resnet: models.Model) -> None:
    with pytest.raises(TradeoffsError, match="no layer 'layr2'.*layer2"):
        features.extract(resnet, _images(2), ["layr2"], device="cpu", progress=False)
    with pytest.raises(TradeoffsError, match="pool must be"):
        features.extract(resnet, _images(2), ["layer2"], device="cpu", pool="median", progress=False)


def test_nan_features_are_refused(resnet: models.Model, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resnet, "intermediates", lambda x, layers: {n: torch.full((len(x), 2), float("nan")) for n in layers})
    with pytest.raises(TradeoffsError, match="NaN"):
        features.extract(resnet, _images(2), ["layer1"], device="cpu", cache=False, progress=False)


def test_one_nan_is_caught_and_huge_finite_features_pass(resnet: models.Model, isolated: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The NaN check is a running sum: one NaN in a later batch is caught, a sum that overflows is not an error."""
    def one_nan(x, layers):
        out = torch.ones((len(x), 3))
        out[-1, 1] = float("nan") if x.shape[0] == 1 else 1.0  # only the last, 1-image batch
        return {n: out for n in layers}

    monkeypatch.setattr(resnet, "intermediates", one_nan)
    with pytest.raises(TradeoffsError, match="NaN"):
        features.extract(resnet, _images(5), ["layer1"], batch_size=2, device="cpu", cache=False, progress=False)
    monkeypatch.setattr(resnet, "intermediates", lambda x, layers: {n: torch.full((len(x), 3), 3e38) for n in layers})
    ds = features.extract(resnet, _images(5), ["layer1"], batch_size=2, device="cpu", cache=False, progress=False)
    assert np.isfinite(ds["layer1"].values).all() and float(ds["layer1"].values.max()) == pytest.approx(3e38)


def test_vit_tokens_and_cls_pool(isolated: Path) -> None:
    torch.manual_seed(0)
    vit = models.load("vit_tiny_patch16_224", weights="random")
    layer = [n for n in vit.layers() if n != "logits"][-1]
    ds = features.extract(vit, _images(2, 224), [layer], device="cpu", pool="mean", progress=False)
    assert ds[layer].dims == ("image", f"{layer}.channel") and ds.sizes[f"{layer}.channel"] == 192


@pytest.mark.gpu
def test_amp_matches_float32_on_cuda(resnet: models.Model, isolated: Path) -> None:
    imgs = _images(8)
    amp = features.extract(resnet, imgs, ["layer3", "logits"], device="cuda", amp=True, cache=False, progress=False)
    fp32 = features.extract(resnet, imgs, ["layer3", "logits"], device="cuda", amp=False, cache=False, progress=False)
    for layer in ("layer3", "logits"):
        a, b = amp[layer].values, fp32[layer].values
        assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max(), layer
    assert results.content_key(amp.attrs) != results.content_key(fp32.attrs)
