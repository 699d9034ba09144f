"""The published tables behind the dataset-correlation page: timm's zoo join and the tllib fine-tuning join."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm

from tradeoffs import probes
from tradeoffs.chapters import dataset_correlation as ch
from tradeoffs.errors import TradeoffsError

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def zoo(data_root):
    return probes.timm_zoo()


def test_zoo_has_one_row_per_model_at_its_smallest_size(zoo, data_root) -> None:
    base = pd.read_csv(data_root / "tables/timm/results-imagenet.csv")
    assert zoo.sizes["model"] == base.model.nunique()
    assert list(zoo.dataset.values) == list(probes.OOD_TABLES)
    small = base.sort_values("img_size").drop_duplicates("model").set_index("model")
    for name in ("resnet50.tv_in1k", "convnext_tiny.fb_in1k"):
        row = zoo.sel(model=name)
        assert int(row.img_size) == small.loc[name, "img_size"] and float(row.top1) == small.loc[name, "top1"]


def test_zoo_values_match_the_source_rows(zoo, data_root) -> None:
    row = zoo.sel(model="resnet50.tv_in1k")
    assert float(row.top1) == pytest.approx(76.156)
    assert float(row.accuracy.sel(dataset="ImageNet-V2")) == pytest.approx(63.19)
    assert float(row.accuracy.sel(dataset="ImageNet-Sketch")) == pytest.approx(24.064)
    assert np.isnan(float(row.accuracy.sel(dataset="ImageNet-A")))  # timm's A table lacks this model
    a = pd.read_csv(data_root / "tables/timm/results-imagenet-a.csv").set_index(["model", "img_size"])
    clean = pd.read_csv(data_root / "tables/timm/results-imagenet-a-clean.csv").set_index(["model", "img_size"])
    name = "resnet50.a1_in1k"
    size = int(zoo.img_size.sel(model=name))
    assert float(zoo.accuracy.sel(model=name, dataset="ImageNet-A")) == a.loc[(name, size), "top1"]
    assert float(zoo.reference_top1.sel(model=name, dataset="ImageNet-A")) == clean.loc[(name, size), "top1"]
    assert (zoo.reference_top1.sel(dataset="ImageNet-V2") == zoo.top1).all()


def test_zoo_pretraining_split_agrees_with_timm_metadata(zoo, data_root) -> None:
    """Where timm's (older, untagged) metadata names an arch with a single tagged model, the two labels agree."""
    meta = pd.read_csv(data_root / "tables/timm/model_metadata-in1k.csv").set_index("model").pretrain
    arch = pd.Series(zoo.arch.values, index=zoo.model.values)
    single = arch[~arch.duplicated(keep=False) & arch.isin(meta.index)]
    ours = pd.Series(probes.pretraining(single.index), index=single.index)
    theirs = single.map(meta).map(lambda p: "extra data" if p.split("-")[0] not in ("in1k",) else "ImageNet-1k")
    assert len(single) > 100 and (ours == theirs).mean() > 0.98


def test_tllib_join(data_root) -> None:
    tl = probes.tllib_finetune()
    assert tl.finetuned_acc.shape == (10, 8) and np.isfinite(tl.finetuned_acc).all()
    assert float(tl.top1.sel(model="ResNet50")) == pytest.approx(76.13)
    assert float(tl.top1.sel(model="GoogleNet")) == pytest.approx(69.778)
    joined = {m for m in tl.model.values if tl.timm_name.sel(model=m).item()}
    assert joined == {"Inception V3", "ResNet50", "ResNet101", "ResNet152", "DenseNet121", "DenseNet169", "Densenet201"}
    assert float(tl.top1_timm.sel(model="ResNet50")) == pytest.approx(76.156)
    assert float(tl.finetuned_acc.sel(model="GoogleNet", dataset="Aircraft")) == pytest.approx(82.7)
    assert np.nanmax(np.abs(tl.top1_timm - tl.top1)) < 1.0


def test_torchvision_top1_refuses_unknown_builders() -> None:
    with pytest.raises(TradeoffsError, match="IMAGENET1K_V1"):
        probes.torchvision_top1("resnet_nonexistent")


def test_chapter_profiles_name_real_models_with_published_top1(data_root) -> None:
    from tradeoffs import models

    profiles = ch.PROFILES
    assert set(profiles) == {"smoke", "default", "full"}
    top1 = pd.read_csv(data_root / "tables/timm/results-imagenet.csv").groupby("model").top1.first()
    named = set(models.named_models())
    for profile in profiles.values():
        for name in [*profile["models"], *profile["baselines"], *profile["finetune_models"]]:
            assert name in named or timm.is_model(name), name
        for name in profile["finetune_models"]:
            assert name in top1.index, f"{name} has no published top-1 in timm's table"
    default = profiles["default"]
    assert len(default["models"]) == 11 and len(default["baselines"]) == 2
