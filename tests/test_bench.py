"""The extraction benchmark on a tiny random model: labelled results with provenance, sane ratios (no timing checks)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeoffs import bench

TINY = bench.Plan((bench.Case("test_resnet", "random", 32, 8, 4), bench.Case("test_vit", "random", 160, 4, 4)),
                  repeats=2, warmup=1, memory_model="test_resnet", memory_size=32, memory_images=(16, 160))


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = bench.run("cpu", TINY, note="test")
    finally:
        torch.set_num_threads(before)
    out = tmp_path_factory.mktemp("bench") / "cpu_quick.nc"
    return bench.save(ds, out, TINY, profile="smoke", elapsed_s=1.0)


@pytest.fixture(scope="module")
def ds(stored: Path) -> xr.Dataset:
    with xr.open_dataset(stored) as d:
        return d.load()


def test_dataset_is_labelled(ds: xr.Dataset) -> None:
    assert ds.images_per_s.dims == ("case", "variant", "repeat")
    assert list(ds.case.values) == [c.label for c in TINY.cases]
    assert ds.variant.values[0] == bench.BASELINE
    assert set(ds.variant.values) == {"plain_forward", "extract", "hooks", "extract_first_cached", "extract_cached_rerun",
                                      "extract_cold_first_call"}
    assert list(ds.model.values) == ["test_resnet", "test_vit"] and list(ds["size"].values) == [32, 160]
    assert list(ds.n_images.values) == list(TINY.memory_images)
    assert ds.images_per_s.attrs["units"] == "images/s" and ds.peak_memory_mib.attrs["units"] == "MiB"


def test_provenance(ds: xr.Dataset) -> None:
    for key in ("device_name", "threads", "torch_version", "timm_version", "versions", "git_commit", "created_utc",
                "load_average_before", "load_average_after"):
        assert key in ds.attrs, key
    assert ds.attrs["threads"] == 1 and ds.attrs["note"] == "test" and ds.attrs["profile"] == "smoke"
    assert ds.attrs["torch_version"] == torch.__version__
    assert json.loads(ds.attrs["parameters"])["plan"]["memory_images"] == list(TINY.memory_images)


def test_throughput_ratios_and_memory_are_finite_and_positive(ds: xr.Dataset) -> None:
    cold = ds.images_per_s.sel(variant="extract_cold_first_call")  # one value: the first call of the process
    assert np.isfinite(cold.isel(repeat=0)).all() and cold.isel(repeat=slice(1, None)).isnull().all()
    assert (ds.images_per_s.drop_sel(variant="extract_cold_first_call") > 0).all()
    table = bench.summary(ds)
    assert len(table) == ds.sizes["case"] * ds.sizes["variant"]
    assert np.isfinite(table[["ratio", "low", "high"]]).all().all() and (table["ratio"] > 0).all()
    assert (table["low"] <= table["ratio"]).all() and (table["ratio"] <= table["high"]).all()
    assert (bench.cached_fraction(ds) > 0).all()
    assert (ds.peak_memory_mib > 0).all() and (ds.output_mib > 0).all()
    assert float(ds.output_mib[1]) == pytest.approx(10 * float(ds.output_mib[0]), rel=0.05)  # 10x the images
    lines = bench.report(ds)
    assert len(lines) == ds.sizes["case"] + 2 and all("plain forward" in ln for ln in lines[:2])


def _fake(speeds: np.ndarray) -> xr.Dataset:
    variants = ["plain_forward", "extract", "extract_first_cached", "extract_cached_rerun"]
    return xr.Dataset({"images_per_s": (("case", "variant", "repeat"), speeds)},
                      coords={"case": [f"c{i}" for i in range(speeds.shape[0])], "variant": variants})


speeds = st.lists(st.floats(0.1, 1e4), min_size=12, max_size=12).map(lambda v: np.array(v).reshape(1, 4, 3))


@settings(max_examples=50, deadline=None)
@given(speeds, st.floats(0.01, 100))
def test_ratios_are_one_for_the_baseline_and_scale_free(s: np.ndarray, k: float) -> None:
    a, b = bench.summary(_fake(s)), bench.summary(_fake(s * k))
    base = a[a.variant == bench.BASELINE].iloc[0]
    assert base.ratio == base.low == base.high == 1.0
    np.testing.assert_allclose(a[["ratio", "low", "high"]], b[["ratio", "low", "high"]], rtol=1e-9)
    paired = s[0, 1] / s[0, 0]  # extract and plain timed in the same rounds: divided round by round
    assert a[a.variant == "extract"].ratio.iloc[0] == pytest.approx(np.median(paired))
    frac = bench.cached_fraction(_fake(s)).iloc[0]
    assert frac == pytest.approx(np.median(s[0, 2]) / np.median(s[0, 3]))


@given(st.lists(st.text("abcdefgh.", min_size=1, max_size=6), min_size=1, max_size=40, unique=True))
def test_bench_layers_thin_evenly(names: list[str]) -> None:
    picked = bench.bench_layers(SimpleNamespace(layers=lambda: [*names, "logits"]))
    assert 1 <= len(picked) <= bench.MAX_LAYERS and "logits" not in picked
    assert picked == [n for n in names if n in picked]  # forward order, no duplicates
    gaps = np.diff([names.index(n) for n in picked])
    assert len(set(gaps)) <= 1  # evenly spaced
    if len(names) <= bench.MAX_LAYERS:
        assert picked == names


def test_timed_interleaves_rounds_and_drops_warmup() -> None:
    calls: list[str] = []
    out = bench.timed({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2, sync=False)
    assert calls == ["a", "b"] * 5
    assert {k: len(v) for k, v in out.items()} == {"a": 3, "b": 3} and all(t >= 0 for v in out.values() for t in v)


def test_timed_settles_after_each_function_outside_the_timing() -> None:
    calls: list[str] = []
    out = bench.timed({"a": lambda: calls.append("a")}, repeats=2, warmup=1, sync=False,
                      settle=lambda: (calls.append("settle"), time.sleep(0.05)))
    assert calls == ["a", "settle"] * 3
    assert max(out["a"]) < 0.05, "the settle step was timed"


@given(st.integers(1, 16))
def test_scaled_multiplies_images_and_caps_batch(k: int) -> None:
    plan = bench.scaled(bench.FULL, k)
    for old, new in zip(bench.FULL.cases, plan.cases):
        assert new.images == old.images * k and new.batch == min(256, old.batch * k)
    assert plan.memory_images == bench.FULL.memory_images


def test_at_size_feeds_the_size_as_is() -> None:
    from tradeoffs import models

    m = bench.at_size(models.load("test_resnet", weights="random"), 48)
    assert m.preprocess.input_size == (48, 48) and m.preprocess.crop_pct == 1.0
    assert m.preprocess(torch.rand(2, 3, 48, 48)).shape == (2, 3, 48, 48)


def test_cli_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--device", "cpu", "--scale", "0"]) == 1
    assert "--scale" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert bench.main(["--device", "cuda"]) == 1
        assert "no CUDA device" in capsys.readouterr().err
