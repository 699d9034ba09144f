"""Behavioural metrics: hand-worked cases, properties, refusals, and checks against the stored human data."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tradeoffs import metrics as M
from tradeoffs.errors import TradeoffsError

MVH = "model-vs-human"


def data_file(relpath: str) -> Path:
    """A file under TRADEOFFS_DATA, or skip the test."""
    root = os.environ.get("TRADEOFFS_DATA")
    if not root or not (Path(root) / relpath).exists():
        pytest.skip(f"needs {relpath} under TRADEOFFS_DATA")
    return Path(root) / relpath


def trials(rows, columns=("dataset", "observer", "condition", "image", "category", "texture", "response")):
    return pd.DataFrame(rows, columns=list(columns))


# ------------------------------------------------------------------ 2AFC, accuracy, 16 classes

def test_two_afc_hand_worked_with_ties():
    d0, d1 = [1.0, 2.0, 3.0, 1.0], [2.0, 1.0, 3.0, 1.0]
    p = [0.25, 0.25, 0.6, 1.0]  # share of judges preferring p1
    # d0 < d1 → agree with those preferring p0: 0.75; d1 < d0 → 0.25; ties → 0.5 whatever p is
    per, mean = M.two_afc(d0, d1, p)
    np.testing.assert_allclose(per, [0.75, 0.25, 0.5, 0.5])
    assert mean == pytest.approx(0.5)
    per, _ = M.two_afc(torch.tensor([0.0]), torch.tensor([1.0]), np.array([0.0]))
    assert per[0] == 1.0


@pytest.mark.parametrize("args, match", [
    (([1.0], [2.0], [1.5]), r"\[0, 1\]"),
    (([1.0, 2.0], [2.0], [0.5]), "lengths"),
    (([np.nan], [2.0], [0.5]), "NaN"),
    (([], [], []), "non-empty"),
])
def test_two_afc_refuses(args, match):
    with pytest.raises(TradeoffsError, match=match):
        M.two_afc(*args)


def test_accuracy_hand_worked():
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.0],   # top1 = 1, top2 = {1, 0}
                           [0.5, 0.1, 0.3, 0.2],   # top1 = 0, top2 = {0, 2}
                           [0.0, 0.1, 0.2, 0.7]])  # top1 = 3, top2 = {3, 2}
    labels = torch.tensor([1, 2, 1])
    assert M.accuracy(logits, labels, k=(1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    assert M.accuracy(logits.numpy(), labels.numpy(), k=4) == {4: 1.0}
    with pytest.raises(TradeoffsError, match="k="):
        M.accuracy(logits, labels)  # default k=(1, 5) but only 4 classes
    with pytest.raises(TradeoffsError, match="labels must lie"):
        M.accuracy(logits, torch.tensor([1, 2, 4]), k=1)


def test_imagenet_to_16_means_and_order():
    p = np.zeros((2, 1000))
    p[0, [0, 1, 2]] = [0.2, 0.6, 0.2]
    p[1, 999] = 1.0
    probs16, cats = M.imagenet_to_16(p, {"zebra": [999], "ant": [1, 2], "bee": [0]})
    assert cats == ["ant", "bee", "zebra"]
    np.testing.assert_allclose(probs16, [[0.4, 0.2, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(TradeoffsError, match="1001-way"):
        M.imagenet_to_16(np.full((1, 1001), 1 / 1001), {"a": [0]})
    with pytest.raises(TradeoffsError, match="softmax"):
        M.imagenet_to_16(np.ones((1, 1000)), {"a": [0]})
    with pytest.raises(TradeoffsError, match="0..999"):
        M.imagenet_to_16(p, {"a": [1000]})


@pytest.mark.data
def test_imagenet_to_16_with_the_model_vs_human_mapping():
    indices = json.loads(data_file(f"{MVH}/helper/16class_imagenet_indices.json").read_text())
    p = np.full((1, 1000), 0.5 / 999)
    p[0, 404] = 0.5  # ImageNet 404 = airliner
    probs16, cats = M.imagenet_to_16(p, indices)
    assert len(cats) == 16 and sum(len(v) for v in indices.values()) == 207
    assert cats[int(probs16.argmax())] == "airplane"


# ------------------------------------------------------------------ shape bias and accuracy

CUE = [  # dataset, observer, condition, image, category (shape), texture, response
    ("cue-conflict", "s1", "0", "cat1-dog1.png", "cat", "dog", "cat"),        # shape hit
    ("cue-conflict", "s1", "0", "cat2-dog2.png", "cat", "dog", "dog"),        # texture hit
    ("cue-conflict", "s1", "0", "car1-bottle1.png", "car", "bottle", "car"),  # shape hit
    ("cue-conflict", "s1", "0", "car2-bottle2.png", "car", "bottle", "knife"),  # neither
    ("cue-conflict", "s1", "0", "cat3-cat4.png", "cat", "cat", "dog"),        # no conflict: excluded
    ("cue-conflict", "s2", "0", "cat1-dog1.png", "cat", "dog", "dog"),        # texture hit
    ("cue-conflict", "s2", "0", "cat2-dog2.png", "cat", "dog", "na"),         # neither
    ("edge", "s1", "0", "oven1.png", "oven", "", "dog"),                    # not cue-conflict: ignored
]


def test_shape_bias_hand_made():
    t = trials(CUE)
    assert M.shape_bias(t) == pytest.approx(2 / 4)  # shape hits 2, texture hits 2
    by_obs = M.shape_bias_by_observer(t)
    assert by_obs["s1"] == pytest.approx(2 / 3) and by_obs["s2"] == 0.0
    with pytest.raises(TradeoffsError, match="cue-conflict"):
        M.shape_bias(trials(CUE[-1:]))
    with pytest.raises(TradeoffsError, match="texture"):
        M.shape_bias(trials(CUE).drop(columns="texture"))


def test_observer_accuracy():
    acc = M.observer_accuracy(trials(CUE))
    assert acc["s1"] == pytest.approx(2 / 6) and acc["s2"] == pytest.approx(0.0)
    by = M.observer_accuracy(trials(CUE), by=("dataset",))
    assert by[("s1", "edge")] == 0.0 and by[("s1", "cue-conflict")] == pytest.approx(2 / 5)


def load_human_trials(datasets=None) -> pd.DataFrame:
    """The model-vs-human raw CSVs in the trial schema (a small local reader for tests)."""
    root = data_file(f"{MVH}/raw-data")
    frames = []
    for path in sorted(root.glob("*/*.csv")):
        dataset = path.parent.name
        if datasets and dataset not in datasets:
            continue
        d = pd.read_csv(path).rename(columns=str.lower)
        parts = d["imagename"].str.split("_")
        image = [f"{p[-2]}_{p[-1]}" if p[-2].startswith("n0") else p[-1] for p in parts]
        frame = pd.DataFrame({"dataset": dataset, "observer": d["subj"], "condition": d["condition"].astype(str),
                              "image": image, "category": d["category"], "response": d["object_response"]})
        last = frame["image"].str.split(".").str[0].str.split("-").str[-1]
        frame["texture"] = last.str.replace(r"\d", "", regex=True) if dataset == "cue-conflict" else ""
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.mark.data
def test_human_shape_bias_matches_the_stored_verification():
    t = load_human_trials({"cue-conflict"})
    assert M.shape_bias(t) == pytest.approx(9236 / (9236 + 398))  # SOURCES.md §6: 0.9587, published ≈ 0.96
    by_obs = M.shape_bias_by_observer(t)
    assert len(by_obs) == 10 and by_obs.mean() == pytest.approx(0.9576, abs=1e-4)
    assert by_obs.min() == pytest.approx(0.919, abs=1e-3) and by_obs.max() == pytest.approx(0.987, abs=1e-3)


# ------------------------------------------------------------------ error consistency

def observer(name, correct, dataset="d", condition="0"):
    """Trials of one observer: response is the category when correct, else 'x'."""
    return trials([(dataset, name, condition, f"im{i}", "cat", "", "cat" if c else "x") for i, c in enumerate(correct)])


def test_error_consistency_identical_observers_is_one():
    a = observer("a", [1, 0, 1, 1, 0])
    assert M.error_consistency(a, observer("b", [1, 0, 1, 1, 0]))["kappa"] == 1.0
    all_right = M.error_consistency(observer("a", [1, 1]), observer("b", [1, 1]))
    assert all_right["c_exp"] == 1.0 and all_right["kappa"] == 1.0  # c_exp == 1 → kappa 1 (model-vs-human rule)


def test_error_consistency_hand_worked():
    # a: R R W W (p=.5), b: R W W W (p=.25); c_exp = .5*.25 + .5*.75 = .5; equal on trials 1,3,4: c_obs = .75
    a, b = observer("a", [1, 1, 0, 0]), observer("b", [1, 0, 0, 0, 1])  # b has an extra trial a lacks
    res = M.error_consistency(a, b.sample(frac=1, random_state=0))  # row order must not matter
    assert res == {"kappa": pytest.approx(0.5), "c_obs": 0.75, "c_exp": pytest.approx(0.5), "n": 4}


def test_error_consistency_of_independent_observers_is_near_zero():
    rng = np.random.default_rng(0)
    res = M.error_consistency(observer("a", rng.random(20000) < 0.7), observer("b", rng.random(20000) < 0.6))
    assert abs(res["kappa"]) < 0.03 and res["c_exp"] == pytest.approx(0.7 * 0.6 + 0.3 * 0.4, abs=0.01)


def test_error_consistency_refuses():
    with pytest.raises(TradeoffsError, match="share no"):
        M.error_consistency(observer("a", [1]), observer("b", [1], dataset="other"))
    with pytest.raises(TradeoffsError, match="repeated"):
        M.error_consistency(pd.concat([observer("a", [1]), observer("a", [0])]), observer("b", [1]))
    with pytest.raises(TradeoffsError, match="one observer each"):
        M.error_consistency(pd.concat([observer("a", [1]), observer("c", [0])]), observer("b", [1]))


def test_error_consistency_matrix_equals_pairwise_calls():
    rng = np.random.default_rng(1)
    t = pd.concat([observer(o, rng.random(40) < 0.6, dataset=d) for o in "abcd" for d in ("d1", "d2")]
                  + [observer("e", rng.random(40) < 0.6, dataset="d1")], ignore_index=True)  # e lacks d2
    m = M.error_consistency_matrix(t)
    assert m.dims == ("observer", "observer2", "dataset") and m.shape == (5, 5, 2)
    for d in ("d1", "d2"):
        for o1 in "abcd":
            for o2 in "abcd":
                sub = t[t["dataset"] == d]
                expected = M.error_consistency(sub[sub["observer"] == o1], sub[sub["observer"] == o2])["kappa"]
                assert float(m.sel(observer=o1, observer2=o2, dataset=d)) == pytest.approx(expected)
    np.testing.assert_allclose(m.values, m.values.transpose(1, 0, 2))
    assert np.isnan(float(m.sel(observer="e", observer2="a", dataset="d2")))
    assert int(m.n_trials.sel(observer="e", observer2="a", dataset="d2")) == 0
    assert int(m.n_trials.sel(observer="e", observer2="a", dataset="d1")) == 40
    sub = M.error_consistency_matrix(t, observers=["b", "a"], by=("dataset", "condition"))
    assert list(sub.observer.values) == ["b", "a"] and sub.dims == ("observer", "observer2", "dataset", "condition")
    with pytest.raises(TradeoffsError, match="close names"):
        M.error_consistency_matrix(t, observers=["aa"])
    with pytest.raises(TradeoffsError, match="subset"):
        M.error_consistency_matrix(t, by=("image",))


@pytest.mark.data
def test_error_consistency_matrix_on_all_human_trials():
    t = load_human_trials()
    m = M.error_consistency_matrix(t)
    assert m.sizes == {"observer": 10, "observer2": 10, "dataset": 17}
    diag = np.stack([m.values[i, i] for i in range(10)])
    assert np.all(diag[~np.isnan(diag)] == 1.0)
    off = m.values[~np.eye(10, dtype=bool)]
    off = off[np.isfinite(off)]
    assert len(off) > 0 and (off > -1).all() and (off < 1).all()
    edge = t[t["dataset"] == "edge"]
    expected = M.error_consistency(edge[edge["observer"] == "subject-01"], edge[edge["observer"] == "subject-02"])
    assert float(m.sel(observer="subject-01", observer2="subject-02", dataset="edge")) == pytest.approx(
        expected["kappa"])


# ------------------------------------------------------------------ human label distributions

def test_human_label_alignment_identical_distributions():
    h = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.0, 0.0, 1.0]])
    res = M.human_label_alignment(h, h)
    assert res["kl"] == pytest.approx(0.0, abs=1e-12) and res["top1_agreement"] == 1.0
    assert res["cross_entropy"] == pytest.approx(np.mean([np.log(2), -(0.9 * np.log(0.9) + 0.1 * np.log(0.05)), 0]))
    assert res["entropy_spearman"] == pytest.approx(1.0)


def test_human_label_alignment_hand_worked():
    p = np.array([[0.5, 0.5], [0.5, 0.5]])
    h = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = M.human_label_alignment(p, h)
    assert res["cross_entropy"] == pytest.approx(np.log(2)) and res["kl"] == pytest.approx(np.log(2))
    assert res["top1_agreement"] == 0.5  # ties of p → first index
    p_conf = np.array([[1.0, 0.0]])
    assert M.human_label_alignment(p_conf, np.array([[0.0, 1.0]]))["cross_entropy"] == pytest.approx(-np.log(1e-12))
    with pytest.raises(TradeoffsError, match="sum"):
        M.human_label_alignment(np.array([[0.5, 0.6]]), h[:1])
    with pytest.raises(TradeoffsError, match="differ"):
        M.human_label_alignment(p, h[:1])


@pytest.mark.data
def test_human_label_alignment_on_cifar10h():
    h = np.load(data_file("cifar10h/cifar10h-probs.npy"))
    res = M.human_label_alignment(h, h)
    assert res["kl"] == pytest.approx(0.0, abs=1e-9) and res["top1_agreement"] == 1.0 and res["n"] == 10000
    uniform = M.human_label_alignment(np.full_like(h, 0.1), h)
    assert uniform["cross_entropy"] == pytest.approx(np.log(10))


# ------------------------------------------------------------------ saliency and map alignment

def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()


def test_saliency_shape_nonnegative_batched_and_leaves_parameters_alone():
    net, x, y = tiny_net(), torch.randn(6, 3, 12, 10), torch.tensor([0, 1, 2, 3, 4, 0])
    s = M.saliency(net, x, y)
    assert s.shape == (6, 12, 10) and (s >= 0).all() and s.sum() > 0
    one_by_one = torch.cat([M.saliency(net, x[i:i + 1], y[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(s, one_by_one)
    assert all(p.grad is None for p in net.parameters()) and not x.requires_grad
    with torch.no_grad():  # works inside no_grad too
        torch.testing.assert_close(M.saliency(net, x, y), s)
    with pytest.raises(TradeoffsError, match="eval"):
        M.saliency(net.train(), x, y)


def test_saliency_of_a_linear_model_is_max_abs_weight():
    torch.manual_seed(1)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 4)).eval()
    s = M.saliency(lin, torch.randn(2, 2, 3, 3), torch.tensor([3, 1]))
    w = lin[1].weight.detach().reshape(4, 2, 3, 3)
    torch.testing.assert_close(s, w[[3, 1]].abs().amax(1))


def test_clickme_kernel():
    k = M._gaussian_kernel()
    assert k.shape == (10, 10) and k.sum().item() == pytest.approx(1.0)
    assert np.unravel_index(int(k.argmax()), k.shape) == (4, 5)  # x = 0 at column 5, y = 0 at row 4
    assert (k[0, 0] / k[4, 5]).item() == pytest.approx(np.exp(-(4 ** 2 + 5 ** 2) / 200))


def test_map_alignment():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:56, 0:56]
    blobs = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 200.0) for cy, cx in [(20, 30), (40, 10)]])
    same = M.map_alignment(blobs, blobs, blur_saliency=True)
    np.testing.assert_allclose(same, 1 / M.CLICKME_CEILING)
    default = M.map_alignment(blobs, blobs)  # only the human map is blurred
    noise = M.map_alignment(rng.random((2, 56, 56)), blobs)
    assert (default > 0.8 / M.CLICKME_CEILING).all() and (np.abs(noise) < 0.2).all()
    np.testing.assert_allclose(M.map_alignment(blobs, 3 * blobs[::-1]), M.map_alignment(blobs, blobs[::-1]))
    np.testing.assert_allclose(M.map_alignment(blobs, blobs, ceiling=1.0), default * M.CLICKME_CEILING)
    assert np.isnan(M.map_alignment(np.ones((1, 8, 8)), blobs[:1])).all()
    with pytest.raises(TradeoffsError, match="one human map"):
        M.map_alignment(blobs, blobs[:1])


def test_calibrated_kl_removes_temperature_and_keeps_the_pattern():
    rng = np.random.default_rng(0)
    logits = 2 * rng.normal(size=(400, 10))
    human = np.exp(logits / 2)
    human /= human.sum(1, keepdims=True)
    for t in (0.2, 1.0, 5.0):  # the model's pattern is the human one at any temperature
        p = np.exp(logits / 2 / t)
        p /= p.sum(1, keepdims=True)
        assert M.calibrated_kl(p, human).mean() < 1e-3
        assert t == 1.0 or M.human_label_alignment(p, human)["kl"] > 0.05
    shuffled = np.exp(logits[rng.permutation(400)] / 2)
    shuffled /= shuffled.sum(1, keepdims=True)
    assert M.calibrated_kl(shuffled, human).mean() > 0.3, "a wrong pattern stays far after scaling"
