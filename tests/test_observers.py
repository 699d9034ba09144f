"""Models as observers: trial tables, the observer table, CIFAR-10H plumbing, and the ClickMe reader and pipeline."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tradeoffs import data, metrics, observers
from tradeoffs.errors import TradeoffsError
from tradeoffs.models import Model, ModelMeta, Preprocess

CATEGORIES = sorted(["airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog",
                     "elephant", "keyboard", "knife", "oven", "truck"])


def make_model(module: nn.Module, size: int = 16, num_classes: int = 1000, name: str = "toy") -> Model:
    meta = ModelMeta(name, "test", "MIT", None, "none", sum(p.numel() for p in module.parameters()), num_classes, "random")
    return Model(name, module.eval(), Preprocess((size, size), (0.5,) * 3, (0.25,) * 3), meta)


class Constant(nn.Module):
    """Logits that always favour one class (a little input dependence keeps gradients alive)."""

    def __init__(self, winner: int, num_classes: int = 1000):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
        with torch.no_grad():
            self.bias[winner] = 10.0

    def forward(self, x):
        return self.bias.expand(len(x), -1) + 1e-3 * x.mean((1, 2, 3))[:, None]


class Linear(nn.Module):
    """logits = <x, W_k>: the input gradient of logit k is W_k whatever the image."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x, self.weight)


def table(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["dataset", "observer", "image", "category", "texture", "response"])
    return frame.assign(condition="0", rt=np.nan, trial=frame.groupby("observer").cumcount() + 1)[
        list(observers.TRIAL_COLUMNS)]


# ------------------------------------------------------------------ observer table (hand-worked)

def hand_worked_trials() -> pd.DataFrame:
    stimuli = [("a.png", "cat", "dog"), ("b.png", "dog", "cat"), ("c.png", "car", "car"), ("d.png", "bird", "boat")]
    answers = {"subject-01": ["cat", "dog", "car", "boat"],   # right, right, right, texture
               "subject-02": ["dog", "dog", "car", "bird"],   # texture, right, right, right
               "net": ["cat", "dog", "car", "boat"]}          # copies subject-01
    rows = [("cue-conflict", o, img, cat, tex, r) for o, rs in answers.items() for (img, cat, tex), r in zip(stimuli, rs)]
    rows += [("edge", o, "e.png", "oven", "", "oven" if o != "net" else "knife") for o in answers]
    rows += [("edge", o, "f.png", "knife", "", "knife") for o in answers]
    return table(rows)


def test_observer_table_hand_worked():
    ds = observers.observer_table(hand_worked_trials())
    assert list(ds["observer"].values) == ["subject-01", "subject-02", "net"]
    assert list(ds["kind"].values) == ["human", "human", "model"]
    assert ds["accuracy"].dims == ("observer", "dataset") and ds["shape_bias"].dims == ("observer",)
    np.testing.assert_allclose(ds["accuracy"].sel(dataset="cue-conflict"), [0.75, 0.75, 0.75])
    np.testing.assert_allclose(ds["accuracy"].sel(dataset="edge"), [1.0, 1.0, 0.5])
    np.testing.assert_allclose(ds["shape_bias"], [2 / 3, 2 / 3, 2 / 3])  # c.png has no conflict and is left out
    # correct: s01 1110, s02 0111 -> c_obs 1/2, c_exp 0.75^2 + 0.25^2 -> kappa -1/3; net == s01 -> kappa 1
    cc = ds.sel(dataset="cue-conflict")
    assert float(cc["kappa"].sel(observer="net", observer2="subject-01")) == pytest.approx(1.0)
    assert float(cc["kappa"].sel(observer="net", observer2="subject-02")) == pytest.approx(-1 / 3)
    assert float(cc["error_consistency_mean"].sel(observer="net")) == pytest.approx(1 / 3)
    assert float(cc["error_consistency_mean"].sel(observer="subject-01")) == pytest.approx(-1 / 3)  # not with oneself
    assert np.isnan(float(cc["error_consistency_sd"].sel(observer="subject-01")))  # one other human only
    assert float(cc["error_consistency_min"].sel(observer="net")) == pytest.approx(-1 / 3)
    assert int(ds["n_trials"].sel(observer="net", dataset="edge")) == 2
    assert int(ds["n_shared_trials"].sel(observer="net", observer2="subject-02", dataset="cue-conflict")) == 4


def test_observer_table_needs_people_and_columns():
    trials = hand_worked_trials()
    with pytest.raises(TradeoffsError, match="human trials"):
        observers.observer_table(trials[trials["observer"] == "net"])
    with pytest.raises(TradeoffsError, match="columns"):
        observers.observer_table(trials.drop(columns="texture"))
    ds = observers.observer_table(trials, humans=["subject-02"])  # only one reference human
    assert float(ds["error_consistency_mean"].sel(observer="subject-01", dataset="cue-conflict")) == pytest.approx(-1 / 3)
    assert list(ds["kind"].values) == ["model", "human", "model"]


def test_restrict_and_humans_in():
    trials = hand_worked_trials()
    net = trials[(trials["observer"] == "net") & (trials["image"].isin(["a.png", "e.png"]))]
    people = observers.restrict(trials[trials["observer"] != "net"], to=net)
    assert sorted(people["image"].unique()) == ["a.png", "e.png"] and len(people) == 4
    assert list(people.columns) == list(trials.columns)
    assert observers.humans_in(trials) == ["subject-01", "subject-02"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(CATEGORIES), st.sampled_from(CATEGORIES)), min_size=1, max_size=12),
       st.integers(1, 3), st.randoms(use_true_random=False))
def test_trials_round_trip(stimuli, n_models, rnd):
    rows = [("cue-conflict", f"m{k}", f"{s}{i}-{t}{i}.png", s, t, rnd.choice(CATEGORIES))
            for k in range(n_models) for i, (s, t) in enumerate(stimuli)]
    trials = table(rows)
    back = observers.dataset_to_trials(observers.trials_to_dataset(trials))
    key = ["observer", "dataset", "condition", "image"]
    pd.testing.assert_frame_equal(back.drop(columns="trial").sort_values(key).reset_index(drop=True),
                                  trials.drop(columns="trial").sort_values(key).reset_index(drop=True))


def test_trials_to_dataset_refuses_gaps_and_repeats():
    trials = table([("edge", "m1", "x.png", "cat", "", "cat"), ("edge", "m2", "y.png", "cat", "", "dog")])
    with pytest.raises(TradeoffsError, match="every observer on every stimulus"):
        observers.trials_to_dataset(trials)
    with pytest.raises(TradeoffsError, match="repeated"):
        observers.trials_to_dataset(pd.concat([trials, trials]))


# ------------------------------------------------------------------ real stimuli and human data

@pytest.fixture(scope="module")
def human(data_root):
    return data.human_trials(list(data.STIMULUS_SETS))


@pytest.mark.data
def test_human_numbers_match_the_data_notes(human):
    """model-vs-human/SOURCES.md §6: pooled 0.9587, observer mean 0.9576, range 0.919-0.987."""
    ds = observers.observer_table(human[human["dataset"] == "cue-conflict"])
    sb = ds["shape_bias"].to_pandas()
    assert metrics.shape_bias(human) == pytest.approx(0.9587, abs=5e-5)
    assert sb.mean() == pytest.approx(0.9576, abs=5e-5)
    assert (sb.min(), sb.max()) == (pytest.approx(0.919, abs=5e-4), pytest.approx(0.987, abs=5e-4))
    assert (ds["kind"] == "human").all() and ds.sizes["observer"] == 10
    assert 0.2 < float(ds["error_consistency_mean"].mean()) < 0.5  # people agree well beyond chance


@pytest.mark.data
def test_shown_stimuli_subset_is_seeded(human):
    every = observers.shown_stimuli(human, "edge")
    assert len(every) == 160 and every["path"].map(lambda p: p.endswith(".png")).all()
    some = observers.shown_stimuli(human, "edge", n_images=10, seed=1)
    assert len(some) == 10 and set(some["image"]) <= set(every["image"])
    pd.testing.assert_frame_equal(some, observers.shown_stimuli(human, "edge", n_images=10, seed=1))
    assert set(some["image"]) != set(observers.shown_stimuli(human, "edge", n_images=10, seed=2)["image"])
    with pytest.raises(TradeoffsError, match="n_images"):
        observers.shown_stimuli(human, "edge", n_images=0)
    with pytest.raises(TradeoffsError, match="stimulus set"):
        observers.shown_stimuli(human, "sketch")
    with pytest.raises(TradeoffsError, match="no 'silhouette' trials"):
        observers.shown_stimuli(human[human["dataset"] == "edge"], "silhouette")


@pytest.mark.data
def test_model_trials_schema_and_decision_rule(human, isolated):
    dog = data.imagenet_16class_indices()["dog"][0]
    model = make_model(Constant(dog))
    trials = observers.model_trials(model, "cue-conflict", human, observer="always dog", n_images=12, progress=False)
    assert list(trials.columns) == list(observers.TRIAL_COLUMNS) and len(trials) == 12
    assert (trials["response"] == "dog").all() and (trials["observer"] == "always dog").all()
    assert trials["rt"].isna().all() and list(trials["trial"]) == list(range(1, 13))
    assert (trials["texture"] != "").all()
    scores = observers.human_alignment(model, ["cue-conflict", "edge"], human=human, n_images=12, progress=False)
    assert scores["accuracy"].dims == ("dataset",) and str(scores["kind"].values) == "model"
    assert abs(float(scores["error_consistency_mean"].sel(dataset="edge"))) < 0.35


@pytest.mark.data
def test_cifar10h_alignment_matches_metrics(data_root, isolated):
    model = make_model(Constant(3, num_classes=10), size=32, num_classes=10)
    got = observers.cifar10h_alignment(model, n_images=40, seed=0, progress=False)
    idx = np.sort(np.random.default_rng(0).choice(10000, size=40, replace=False))
    labels = data.cifar10("test")["labels"].values[idx]
    probs = observers.softmax_logits(np.tile(model.module.bias.detach().numpy(), (40, 1)))
    want = metrics.human_label_alignment(probs, data.cifar10h()[0][idx])
    assert got["accuracy"] == pytest.approx(np.mean(labels == 3))
    for key in ("cross_entropy", "kl", "top1_agreement"):
        assert got[key] == pytest.approx(want[key], rel=1e-4)
    assert got["n"] == 40
