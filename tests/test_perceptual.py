"""tradeoffs.perceptual: the BAPPS 2AFC path end to end on a synthetic layout, layer choice, all-pairs distances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tradeoffs import features, perceptual
from tradeoffs import models as M
from tradeoffs.errors import TradeoffsError


pytestmark = pytest.mark.usefixtures("one_thread")


def cifar(width: int = 4):
    torch.manual_seed(0)
    return M.load("cifar10_resnet8", weights="random", width=width)


def write_bapps(root: Path, subset: str, judgements: list[float], noisy: str, n_same: int = 0) -> None:
    """Triplets whose `noisy` patch ("p0" or "p1") is the reference plus strong noise and whose other patch equals
    the reference; the last `n_same` triplets have both patches equal to the reference (a tie)."""
    rng = np.random.default_rng(len(subset))
    folder = root / "2afc" / "val" / subset
    for kind in ("ref", "p0", "p1", "judge"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(judgements):
        ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        noise = np.clip(ref.astype(int) + rng.integers(-120, 121, ref.shape), 0, 255).astype(np.uint8)
        tie = i >= len(judgements) - n_same
        patches = {"ref": ref, "p0": ref if tie or noisy == "p1" else noise, "p1": ref if tie or noisy == "p0" else noise}
        for kind, img in patches.items():
            Image.fromarray(img).save(folder / kind / f"{i:06d}.png")
        np.save(folder / "judge" / f"{i:06d}.npy", np.array([p]))


@pytest.fixture()
def bapps(tmp_path: Path) -> Path:
    write_bapps(tmp_path, "traditional", [0.0] * 5, noisy="p1")      # p0 == ref, everyone chose p0: score 1
    write_bapps(tmp_path, "cnn", [0.8] * 4, noisy="p0")              # p1 == ref, 80% chose p1: score 0.8
    write_bapps(tmp_path, "superres", [0.6] * 2 + [0.3] * 2, noisy="p1", n_same=2)  # (1-0.6) twice, ties 0.5 twice
    return tmp_path


EXPECTED = {"cnn": 0.8, "superres": (0.4 + 0.4 + 0.5 + 0.5) / 4, "traditional": 1.0}
HUMAN = {"cnn": 0.8 ** 2 + 0.2 ** 2, "superres": (2 * (0.36 + 0.16) + 2 * (0.09 + 0.49)) / 4, "traditional": 1.0}


def test_bapps_end_to_end_scores_known_judgements(isolated, bapps):
    ds = perceptual.bapps_2afc(cifar(), bapps, progress=False)
    assert list(ds.subset.values) == ["cnn", "superres", "traditional", "overall"]
    assert list(ds.distance.values) == list(perceptual.DISTANCES)
    assert ds.attrs["layers"] == "layer1,layer2,layer3"
    for subset, expected in EXPECTED.items():
        np.testing.assert_allclose(ds.score.sel(subset=subset).values, expected, atol=1e-12)
        assert ds.human.sel(subset=subset).item() == pytest.approx(HUMAN[subset])
    np.testing.assert_allclose(ds.score.sel(subset="overall").values, np.mean(list(EXPECTED.values())))
    assert ds.n_triplets.values.tolist() == [4, 4, 5, 13]
    assert (ds.d0.values >= 0).all() and ds.triplet_score.shape == (3, 13)


def test_bapps_subsets_limit_layers_and_cache(isolated, bapps, monkeypatch):
    model = cifar()
    calls = []
    real = perceptual._distances
    monkeypatch.setattr(perceptual, "_distances", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    a = perceptual.bapps_2afc(model, bapps, ["layer3"], subsets="cnn", distance_names=["mean_pool"], limit=2,
                              progress=False)
    assert a.score.shape == (1, 2) and a.n_triplets.values.tolist() == [2, 2] and a.attrs["layers"] == "layer3"
    b = perceptual.bapps_2afc(model, bapps, ["layer3"], subsets="cnn", distance_names=["mean_pool"], limit=2,
                              progress=False)
    assert len(calls) == 1 and np.array_equal(a.d1.values, b.d1.values)  # the second call read the cache
    with pytest.raises(TradeoffsError, match="unknown distance"):
        perceptual.bapps_2afc(model, bapps, distance_names=["lpips"], progress=False)
    with pytest.raises(TradeoffsError, match="has no layer"):
        perceptual.bapps_2afc(model, bapps, ["layer9"], progress=False)
    with pytest.raises(TradeoffsError, match="download_bapps"):
        perceptual.bapps_2afc(model, bapps / "nowhere", progress=False)


def test_bapps_with_a_vit_uses_class_tokens(isolated, bapps):
    torch.manual_seed(0)
    vit = M.load("vit_tiny_patch16_224", weights="random", img_size=32, depth=2)
    ds = perceptual.bapps_2afc(vit, bapps, subsets="traditional", progress=False)
    assert ds.attrs["layers"] == "blocks.0.cls,blocks.1.cls" and ds.attrs["input_size"] == "(32, 32)"
    np.testing.assert_allclose(ds.score.sel(subset="traditional").values, 1.0)


def test_paper_layer_choice_per_family():
    assert perceptual.paper_view(cifar())[1] == ["layer1", "layer2", "layer3"]
    resnet = M.load("resnet18", weights="random")
    assert perceptual.paper_view(resnet)[1] == ["layer1", "layer2", "layer3", "layer4"]  # stem act1 left out
    effnet = M.load("efficientnet_b0", weights="random")
    assert perceptual.paper_view(effnet)[1] == [n for n in effnet.layers() if n != "logits"]
    assert not perceptual.is_vit(resnet)


def test_class_tokens_are_token_zero_after_each_block():
    torch.manual_seed(0)
    vit = M.load("vit_tiny_patch16_224", weights="random", img_size=32, depth=3)
    view, layers = perceptual.paper_view(vit)
    assert layers == ["blocks.0.cls", "blocks.1.cls", "blocks.2.cls"] and perceptual.is_vit(vit)
    x = torch.rand(2, 3, 32, 32)
    got = view.intermediates(x, [*layers, "logits"])
    m = vit.module
    with torch.no_grad():
        h = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        for i, block in enumerate(m.blocks):
            h = block(h)
            torch.testing.assert_close(got[f"blocks.{i}.cls"], h[:, 0])
        torch.testing.assert_close(got["logits"], m(x))
    ds = features.extract(perceptual.for_patches(view), np.zeros((2, 32, 32, 3), np.uint8), layers[:1], progress=False,
                          cache=False)
    assert ds["blocks.0.cls"].shape == (2, 192)


def test_for_patches_keeps_the_whole_patch():
    model = M.load("resnet18", weights="random")
    assert model.preprocess.crop_pct < 1
    full = perceptual.for_patches(model)
    assert full.preprocess.input_size == (224, 224) and full.preprocess.crop_pct == 1.0
    assert perceptual.for_patches(model, 64).preprocess.input_size == (64, 64)
    vit = M.load("vit_tiny_patch16_224", weights="random", img_size=48, depth=1)
    assert perceptual.for_patches(vit).preprocess.input_size == (48, 48)  # the ViT's own size, not its config's 224
    with pytest.raises(TradeoffsError, match="at least 8"):
        perceptual.for_patches(model, 4)


def test_human_ceiling():
    assert perceptual.human_2afc([0.0, 1.0]) == 1.0 and perceptual.human_2afc([0.5]) == 0.5
    assert perceptual.human_2afc([0.2, 0.6]) == pytest.approx((0.68 + 0.52) / 2)


@pytest.mark.parametrize("kind", list(perceptual.DISTANCES))
def test_pairwise_matches_the_pair_distances(kind):
    rng = torch.Generator().manual_seed(0)
    a = {"conv": torch.randn(5, 4, 3, 3, generator=rng), "vec": torch.randn(5, 6, generator=rng),
         "tok": torch.randn(5, 7, 4, generator=rng)}
    b = {k: torch.randn(v.shape, generator=rng) for k, v in a.items()}
    a["conv"][0, :, 0, 0] = 0  # a zero channel vector: the LPIPS normalisation keeps it zero
    full = perceptual.pairwise(kind, a, b)
    assert full.shape == (5, 5)
    torch.testing.assert_close(full.diagonal(), perceptual.DISTANCES[kind](a, b).double(), rtol=1e-5, atol=1e-5)
    shifted = {k: v.roll(1, 0) for k, v in b.items()}
    torch.testing.assert_close(full.diagonal(-1), perceptual.DISTANCES[kind](
        {k: v[1:] for k, v in a.items()}, {k: v[1:] for k, v in shifted.items()}).double(), rtol=1e-5, atol=1e-5)
    assert (perceptual.nearest(kind, a, b, block=2) == full.argmin(1).numpy()).all()


def test_nearest_finds_a_copy_and_neighbour_agreement():
    rng = torch.Generator().manual_seed(1)
    refs = {"l": torch.randn(6, 3, 4, 4, generator=rng)}
    queries = {"l": refs["l"][[4, 1, 2]] + 1e-3}
    for kind in perceptual.DISTANCES:
        assert perceptual.nearest(kind, queries, refs).tolist() == [4, 1, 2]
    h = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0]])
    out = perceptual.neighbour_human_agreement([1, 2], h)
    assert out["human_prob"].tolist() == [0.3, 0.0] and out["plausible"].tolist() == [1.0, 0.0]
    with pytest.raises(TradeoffsError, match="neighbour label"):
        perceptual.neighbour_human_agreement([3, 0], h)
    with pytest.raises(TradeoffsError, match="unknown distance"):
        perceptual.embed("cosine", refs)


def test_cifar10h_measures_on_known_answers(isolated):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    images = np.concatenate([base, base[[2, 0, 5]]])  # the queries are copies of references 2, 0, 5
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 0, 2])
    human = np.eye(3)[labels]
    human[6] = [0.5, 0.0, 0.5]  # query 0 (a copy of reference 2, class 2): half the people say class 2
    human[7] = [0.0, 1.0, 0.0]  # query 1 (a copy of reference 0, class 0): nobody says class 0
    model = M.load("cifar10_resnet8", weights="random", num_classes=3, width=4)
    out = perceptual.cifar10h_measures(model, images, labels, human, n_reference=6)
    assert out["nn_human_prob"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert out["nn_plausible"] == pytest.approx(2 / 3)
    logits = features.extract(model, images, ["logits"], progress=False)["logits"].values
    assert out["accuracy"] == pytest.approx((logits.argmax(1) == labels).mean())
    assert out["n"] == 9 and out["kl"] > 0
    with pytest.raises(TradeoffsError, match="n_reference"):
        perceptual.cifar10h_measures(model, images, labels, human, n_reference=9)


def test_per_image_table_agrees_with_the_summary(isolated):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    human = rng.dirichlet(np.ones(3) * 0.3, size=12)
    model = M.load("cifar10_resnet8", weights="random", num_classes=3, width=4)
    table = perceptual.cifar10h_per_image(model, images, labels, human, n_reference=5)
    summary = perceptual.cifar10h_measures(model, images, labels, human, n_reference=5)
    assert table.shape == (12, 6) and table["nn_human_prob"].iloc[:5].isna().all()
    assert table["nn_human_prob"].iloc[5:].notna().all()
    for key in ("kl", "kl_calibrated", "cross_entropy"):  # the per-image formula is the one of metrics.human_label_alignment
        assert table[key].mean() == pytest.approx(summary[key], rel=1e-9)
    assert table["correct"].mean() == pytest.approx(summary["accuracy"])
    assert table["nn_human_prob"].mean() == pytest.approx(summary["nn_human_prob"])
