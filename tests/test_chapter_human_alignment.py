"""The human-alignment chapter module: settings, the stored results it reloads, and the sentences it builds."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tradeoffs import claims, results, store
from tradeoffs.chapters import human_alignment as ch
from tradeoffs.errors import TradeoffsError

GIVEN = {"models": None, "random_models": None, "timm_models": None, "n_images": None, "cifar_models": None,
         "n_cifar": None, "n_clickme": None, "device": "auto", "seed": 0}  # the notebook's parameter defaults


def stored(part: str) -> xr.Dataset:
    """The committed default results file of `part`."""
    root = results.repo_root()
    try:
        return store.load(claims.result_name("human_alignment", part, "default"), root / "data" / "results")
    except (TradeoffsError, TypeError):
        pytest.skip(f"no stored human_alignment_{part}_default.nc")


def test_settings_resolve_the_profile():
    P = ch.settings("default", GIVEN)
    assert P["models"] == ch.OFFLINE_IMAGENET and P["n_cifar"] is None and P["n_images"] == {}
    assert P["cifar_models"] == ch.PRETRAINED_CIFAR and (P["device"], P["seed"]) == ("auto", 0)
    assert list(P) == [*ch.PROFILES["default"], "device", "seed"]  # the order the stored keys were made in


def test_settings_override_only_given_values():
    P = ch.settings("smoke", {**GIVEN, "n_cifar": 10, "seed": 3})
    assert P["n_cifar"] == 10 and P["seed"] == 3
    assert P["models"] == ch.PROFILES["smoke"]["models"]  # None keeps the profile's value
    assert P["n_images"] == {"cue-conflict": 64, "edge": 32, "silhouette": 32}


def test_settings_refuse_an_unknown_profile():
    with pytest.raises(TradeoffsError, match="unknown profile 'huge'"):
        ch.settings("huge", GIVEN)


def test_offline_models_are_the_stored_observers():
    obs = stored("observers")
    pretrained = obs["observer"].values[(obs["kind"] == "model").values & (obs["weights"] == "pretrained").values]
    assert sorted(pretrained) == sorted(ch.OFFLINE_IMAGENET)
    assert all(not n.startswith("cifar10_") for n in ch.OFFLINE_IMAGENET)


def test_measured_reproduces_the_stored_verdict():
    obs, cifar, harm, verdict = stored("observers"), stored("cifar10h"), stored("harmonization"), stored("verdict")
    measured = ch.measured(obs, cifar, harm, None, seed=0)
    declared = {t.id for t in claims.claim("human_alignment").tests}
    assert set(measured) == declared - {"clickme_here"}
    for test, m in measured.items():
        row = verdict.sel(test=test)
        assert (m.estimate, m.ci_low, m.ci_high) == pytest.approx(
            (float(row.estimate), float(row.ci_low), float(row.ci_high)), abs=1e-12), test
        assert m.n == int(row.n) and m.gates["enough_n"] == m.n
    assert measured["serre_table"].n < harm.sizes["model"]  # the held-out half beyond its optimum
    assert 0 <= measured["ec_pooled"].gates["homogeneous"] <= 1


def test_statistics_table_holds_the_stored_harmonization_rows():
    obs, cifar, harm = stored("observers"), stored("cifar10h"), stored("harmonization")
    table = ch.statistics(obs, cifar, harm, None)
    assert list(table.columns) == ["estimate", "ci_low", "ci_high", "p", "n"]
    every = table.loc["harmonization table: top-1 vs alignment, all models"]
    assert every["estimate"] == pytest.approx(-0.654, abs=5e-4) and every["n"] == 552
    vertex = table.loc["harmonization table: quadratic vertex (top-1 %)"]
    assert vertex["estimate"] == float(harm["quadratic_vertex_x"]) and np.isnan(vertex["p"])
    assert table.loc["CIFAR-10 accuracy vs KL(humans ‖ model) (nats)", "n"] == cifar.sizes["model"]


def test_texts_from_stored_results():
    trials, obs, cifar, harm = stored("trials"), stored("observers"), stored("cifar10h"), stored("harmonization")
    shape, kappa = ch.human_tables(obs)
    assert shape.loc["human shape bias, pooled", "ours"] == pytest.approx(0.959, abs=5e-4)
    assert shape.loc["human shape bias, pooled", "published"] == 0.959
    assert set(kappa.columns) == set(obs["dataset"].values)
    assert "Our human shape bias is 0.959 pooled" in ch.people_text(obs)
    assert ch.accuracy_text(obs).startswith("Across the 11 models, Spearman ρ between top-1 and shape bias is ")
    text = ch.verdict_text(trials, obs, cifar, harm, seed=0)
    assert "re-analyses the claimants' serre-lab table (not an independent test)" in text
    assert f"The CIFAR-10H row has {cifar.sizes['model']} models" in text
    minutes = sum(float(d.attrs["elapsed_s"]) for d in (trials, obs, cifar, harm)) / 60
    assert f"The last computation of this page's results took {minutes:.1f} min (model decisions " in text
    assert text.endswith(f"`elapsed_s`) on {obs.attrs['device']}. A recomputation that finds the models' logits in "
                         "the features cache takes a small fraction of that.")
    assert f"CIFAR-10H {float(cifar.attrs['elapsed_s']) / 60:.1f} min" in text


def test_outlook_says_whether_the_full_profile_has_run(isolated):
    obs, harm, cifar = stored("observers"), stored("harmonization"), stored("cifar10h")
    assert "would support the claim where this page cannot. It has not been run here: there are no `full` results." \
        in ch.outlook_text(obs, harm, cifar)
    assert f"For CIFAR-10H, {cifar.sizes['model']} pretrained networks are too few" in ch.outlook_text(obs, harm, cifar)
    store.save(obs, claims.result_name("human_alignment", "observers", "full"), profile="full", parameters={},
               elapsed_s=0.0)
    assert "Its stored results exist." in ch.outlook_text(obs, harm, cifar)


def test_harmonization_text_describes_the_shape_and_the_score():
    harm = stored("harmonization")
    text = ch.harmonization_text(harm)
    n_below = int(harm["spearman_n"].sel(side="below"))
    assert "Over all 552 models Spearman ρ = -0.654: the check noted with the table" in text
    assert f"only {n_below} of the 552 models lie below it" in text and n_below < 0.1 * 552
    assert "Over the observed range the relation is a decline, not a rise and then a fall." in text
    above_one = int((harm["imgnet_alignment"] > 1).sum())
    assert above_one > 0 and f"{above_one} of the 552 models average above 1" in text


def test_cifar_and_checkpoint_texts_on_synthetic_results():
    cifar = xr.Dataset({"kl": ("model", [0.5, 0.4]), "kl_calibrated": ("model", [0.3, 0.2])},
                       coords={"model": ["cifar10_resnet20", "cifar10_resnet32"],
                               "published_accuracy": ("model", [91.73, np.nan]), "n": ("model", [10_000, 10_000])},
                       attrs={"images_source": "a JPEG copy", "parameters": '{"n_cifar": null}'})
    text = ch.cifar_text(cifar, 2000)
    assert text.startswith("The CIFAR-10 numbers on this page come from all 10,000 CIFAR-10 test images: this page "
                           "compares the pretrained models only with each other, so it reads every image with "
                           "CIFAR-10H labels. The inverted-U page scores the same ResNets on the first 2,000 test "
                           "images only, the images its early-stopping checkpoints are scored on, so its")
    subset = cifar.assign_coords(n=("model", [500, 500])).assign_attrs(parameters='{"n_cifar": 500}')
    assert "come from a seeded random sample of 500 CIFAR-10 test images (this profile's setting)." in ch.cifar_text(
        subset, 400)
    assert "*a JPEG copy*" in text and "(91.7% on the lossless originals)" in text
    assert "lowers it from 0.40–0.50 to 0.20–0.30 nats, so the row judged (`cifar10h`)" in text
    acc = np.array([[[0.2, 0.5, 0.8]], [[0.3, 0.4, 0.6]]])
    checkpoints = xr.Dataset({"accuracy": (("model", "seed", "epoch"), acc),
                              "kl": (("model", "seed", "epoch"), np.stack([-acc[0], acc[1]]))},
                             coords={"model": ["a", "b"], "seed": [0], "epoch": [1, 2, 3]})
    assert "-1.00 for a, 1.00 for b (checkpoints" in ch.checkpoint_text(checkpoints)


@pytest.mark.data
def test_stored_results_reload_without_recompute(data_root, monkeypatch, tmp_path):
    """The content keys are those of the stored files: every part reloads, none is recomputed."""
    monkeypatch.setenv("TRADEOFFS_REUSE_ONLY", "1")
    monkeypatch.setenv("TRADEOFFS_RESULTS", str(results.repo_root() / "data" / "results"))
    monkeypatch.setenv("TRADEOFFS_CACHE", str(tmp_path))
    P = ch.settings("default", GIVEN)
    trials = ch.load_trials(P, "default")
    for ds, part in ((trials, "trials"), (ch.load_observers(P, "default", trials), "observers"),
                     (ch.load_cifar(P, "default"), "cifar10h"), (ch.load_harmonization(P, "default"), "harmonization")):
        assert ds.attrs["inputs_key"] == stored(part).attrs["inputs_key"], part
    assert ch.load_clickme(P, "default") is None
    text = ch.models_text(stored("observers"))
    assert text.startswith("The 11 ImageNet models scored here are offline mobile networks")
    assert "8 int8-quantised TFLite graphs" in text and "39.9–77.5% published top-1 and 128–260 px inputs" in text
    assert "`mobilenet_v2_1.0_224_quant` is placed at its float model's published top-1 (71.8%)" in text
