"""`python -m tradeoffs.score`: an offline model scored at smoke size, its errors, and model-vs-human's CSV format."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import xarray as xr

from tradeoffs import data, models, observers, score, store
from tradeoffs.chapters import score_model as page
from tradeoffs.score.__main__ import main
from tradeoffs.errors import TradeoffsError

REPO = Path(__file__).resolve().parents[1]
OFFLINE = "mobilenet_v1_0.25_128_quant"  # the smallest offline ImageNet model


@pytest.fixture()
def with_references(isolated: Path) -> Path:
    """Isolated results holding copies of the stored `default` results the scorecard compares with."""
    results = isolated / "results"
    results.mkdir()
    for path in (REPO / "data" / "results").glob("*_default.nc"):
        if not path.name.startswith("score_model_"):
            shutil.copy2(path, results / path.name)
    return results


def _nothing_written(results: Path) -> bool:
    return not list(results.glob("score_model_*"))


# ---------------------------------------------------------------- ranks and the model-vs-human raw-data format

def test_rank_and_percentile() -> None:
    assert score.rank(0.5, [0.1, 0.9, 0.3]) == (2, pytest.approx(100 * 2 / 3))
    assert score.rank(0.5, [0.1, 0.9, 0.3], higher_is_better=False) == (3, pytest.approx(100 / 3))
    assert score.rank(0.5, [0.5, np.nan]) == (1, 50.0)
    assert math.isnan(score.rank(0.5, [])[1])


@pytest.mark.data
def test_model_vs_human_csv_round_trip(data_root: Path, tmp_path: Path) -> None:
    """Trials written as <dataset>_<model>_session-1.csv read back to the same shape bias and error consistency."""
    human = data.human_trials(list(data.STIMULUS_SETS))
    mine = human[human["observer"] == "subject-01"].assign(observer="my_net v2", rt=np.nan)
    paths = score.write_mvh_csv(mine, tmp_path)
    assert sorted(p.name for p in paths) == [f"{d}_my_net-v2_session-1.csv" for d in sorted(data.STIMULUS_SETS)]
    raw = pd.read_csv(paths[0])
    assert list(raw.columns) == list(score.MVH_COLUMNS) and not raw["imagename"].str.contains("_").any()
    back = score.read_mvh_folder(tmp_path)
    assert len(back) == len(mine) and set(back["observer"]) == {"my_net v2"}
    people = human[human["observer"] != "subject-01"]
    before, after = (observers.observer_table(pd.concat([people, t], ignore_index=True)).sel(observer="my_net v2")
                     for t in (mine, back))
    assert float(after["shape_bias"]) == pytest.approx(float(before["shape_bias"]))
    np.testing.assert_allclose(after["error_consistency_mean"], before["error_consistency_mean"])


def test_model_vs_human_reader_refuses_other_files(tmp_path: Path) -> None:
    human_style = tmp_path / "edge_subject-01_session_1.csv"
    human_style.write_text("subj\n")
    with pytest.raises(TradeoffsError, match="<dataset>_<model>_session-1.csv"):
        score.read_mvh_csv(human_style)
    (tmp_path / "edge_net_session-1.csv").write_text("subj,trial\nnet,1\n")
    with pytest.raises(TradeoffsError, match="lacks the model-vs-human column"):
        score.read_mvh_csv(tmp_path / "edge_net_session-1.csv")
    with pytest.raises(TradeoffsError, match="no model-vs-human model files"):
        score.read_mvh_folder(tmp_path / "empty")


# ---------------------------------------------------------------- bad input: a clear message, nothing written

def _save(tmp_path: Path, arch: str, **kwargs) -> str:
    path = tmp_path / f"{arch}-{kwargs.get('num_classes', 1000)}.pth"
    torch.save(timm.create_model(arch, **kwargs).state_dict(), path)
    return str(path)


@pytest.mark.parametrize("argv, message", [
    (["not_a_model_name"], "unknown model 'not_a_model_name'.*offline models"),
    (["net", "--arch", "test_resnet"], "give the checkpoint with --weights"),
    (["net", "--weights", "/no/such/file.pth", "--arch", "test_resnet"], "no checkpoint file"),
    (["net", "--weights", "{efficientnet}", "--arch", "test_resnet"], "does not fit"),
    (["net", "--weights", "{resnet_10}", "--arch", "test_resnet"], "head has 10 outputs, not ImageNet's 1000"),
    (["net", "--weights", "{resnet_0}", "--arch", "test_resnet"], "no classifier.*without an ImageNet head"),
    (["net", "--weights", "{resnet_0}", "--arch", "not_an_arch"], "unknown model 'not_an_arch'"),
    ([OFFLINE, "--input-size", "64"], "cannot take 64×64 inputs"),
    ([OFFLINE, "--profile", "full"], "unknown profile 'full' for scoring"),
    ([OFFLINE, "--bapps", "/no/such/folder"], "no BAPPS 2AFC val set"),
    ([], "name a model to score"),
])
def test_bad_input_is_one_clear_error_and_nothing_is_written(argv: list[str], message: str, tmp_path: Path,
                                                              isolated: Path, data_root: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    files = {"{efficientnet}": lambda: _save(tmp_path, "test_efficientnet"),
             "{resnet_10}": lambda: _save(tmp_path, "test_resnet", num_classes=10),
             "{resnet_0}": lambda: _save(tmp_path, "test_resnet", num_classes=0)}
    argv = [files[a]() if a in files else a for a in argv]
    assert main([*argv, "--csv", str(tmp_path / "csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert _nothing_written(isolated / "results") and not (tmp_path / "csv").exists()


def test_unreachable_hub_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, pretrained: bool = False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(TradeoffsError, match="Hugging Face hub must be reachable.*offline models"):
        score.candidate("resnet18")


def test_a_timm_model_without_an_imagenet_head_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = models.load

    def headless(name: str, weights: str = "pretrained", **kwargs):
        return real(name, weights="random", num_classes=21843)

    monkeypatch.setattr(models, "load", headless)
    with pytest.raises(TradeoffsError, match="no ImageNet head: it gives 21843 outputs"):
        score.candidate("test_resnet")


# ---------------------------------------------------------------- the command

@pytest.mark.data
@pytest.mark.slow
def test_command_scores_an_offline_imagenet_model(with_references: Path, tmp_path: Path, one_thread: None,
                                                  capsys: pytest.CaptureFixture) -> None:
    csv, theirs = tmp_path / "csv", tmp_path / "theirs"  # theirs: one "published" model in model-vs-human's format
    human = data.human_trials(list(data.STIMULUS_SETS))
    score.write_mvh_csv(human[human["observer"] == "subject-02"].assign(observer="their_net"), theirs)
    argv = [OFFLINE, "--profile", "smoke", "--csv", str(csv), "--figures", str(tmp_path / "fig"), "--mvh", str(theirs)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "does not apply" in out and "needs the BAPPS 2AFC val set" in out
    ds = store.load(score.result_name(OFFLINE, "smoke"))
    for key in ("git_commit", "profile", "parameters", "versions", "device", "created_utc", "elapsed_s"):
        assert key in ds.attrs
    value = ds["value"].to_pandas()
    assert value["top1"] == pytest.approx(39.9)
    for m in ("shape_bias", "error_consistency", "probe_CIFAR-10", "probe_Fashion-MNIST"):
        assert np.isfinite(value[m]) and ds["status"].sel(measure=m).item() == "measured", m
    assert ds["status"].sel(measure="cifar10h_kl_calibrated").item().startswith("not applicable")
    own = ds.sel(comparison=(ds["reference"] == "the project's offline ImageNet models").values)
    assert (own["n_reference"] == 10).all(), "the model itself is left out of its references"
    assert ((ds["percentile"] >= 0) & (ds["percentile"] <= 100)).all()
    published = ds.sel(comparison=(ds["reference"] == "model-vs-human's published model trials").values)
    assert set(published["comparison_measure"].values) == {"shape_bias", "error_consistency"}
    assert (published["n_reference"] == 1).all() and (published["rank"] == 2).all(), "a person out-scores the net"
    assert len(list((tmp_path / "fig").glob("*.png"))) == len(page.FIGURES)
    back = score.read_mvh_folder(csv)  # the trials written in model-vs-human's format give the stored scores back
    table = observers.observer_table(pd.concat([observers.restrict(human, back), back])).sel(observer=OFFLINE)
    assert float(table["shape_bias"]) == pytest.approx(value["shape_bias"])
    assert float(table["error_consistency_mean"].mean()) == pytest.approx(value["error_consistency"])
    assert main(argv) == 0  # a rerun reloads the stored file
    assert store.load(score.result_name(OFFLINE, "smoke")).attrs["created_utc"] == ds.attrs["created_utc"]


@pytest.mark.data
def test_command_scores_a_cifar10_checkpoint(with_references: Path, tmp_path: Path, one_thread: None) -> None:
    """A local checkpoint of a CIFAR-10 architecture: CIFAR-10H measures only, accuracy unknown unless given."""
    path = tmp_path / "mine.pth"
    torch.save(models.load("cifar10_resnet20").module.state_dict(), path)
    assert main(["my-resnet", "--weights", str(path), "--arch", "cifar10_resnet20", "--profile", "smoke"]) == 0
    ds = store.load(score.result_name("my-resnet", "smoke"))
    value = ds["value"].to_pandas()
    assert ds.attrs["kind"] == score.CIFAR10 and math.isnan(value["top1"])
    assert ds["status"].sel(measure="top1").item().startswith("unknown")
    assert 0.5 < value["cifar10_accuracy"] < 1 and np.isfinite(value["cifar10h_alignment"])
    assert ds["status"].sel(measure="shape_bias").item().startswith("not applicable")
    assert score.trials(ds).empty and isinstance(page.card_table(ds), pd.DataFrame)
    assert page.human_alignment_figure(ds) is not None and page.probe_figure(ds) is None
    assert isinstance(ds, xr.Dataset)


@pytest.mark.data
def test_the_stored_example_gives_the_chapters_values(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The book's example (EfficientNet-Lite2, default) is one of the chapters' models: scored alike, it must match."""
    monkeypatch.setenv("TRADEOFFS_RESULTS", str(REPO / "data" / "results"))
    ds = store.load(score.result_name(page.EXAMPLES["default"], "default"))
    assert not int(ds.attrs["git_dirty"]), "the stored example comes from a clean checkout"
    text = page.card_text(ds)
    assert "the largest difference is 0." in text and "No stored" not in text
    assert all(make(ds) is not None for make in page.FIGURES.values())
    human = data.human_trials(list(data.STIMULUS_SETS))  # default: every stimulus people saw, once
    assert len(score.trials(ds)) == sum(len(observers.shown_stimuli(human, d)) for d in data.STIMULUS_SETS)
