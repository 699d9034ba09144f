"""AnyNetX sampler and builder, the sweep task, and the Dask sweep (same results as serial, resumes after a kill)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from tradeoffs import anynet, data, results, stats, sweep, train
from tradeoffs.errors import TradeoffsError

TINY = anynet.Space(max_depth=1, max_width=32, groups=(1, 2, 4, 8), macs=(0.2e6, 0.5e6), size=32, stem_width=8,
                    stem_stride=1, strides=(1, 2, 2, 2))


def test_samples_lie_in_the_space_and_its_complexity_band() -> None:
    designs = anynet.sample(40, anynet.CIFAR, seed=3)
    assert len(set(designs)) == 40
    for d in designs:
        assert anynet.CIFAR.contains(d)
        assert all(1 <= x <= 4 for x in d.depths) and all(8 <= w <= 256 and w % 8 == 0 for w in d.widths)
        assert set(d.bottlenecks) <= {1, 2, 4} and set(d.groups) <= {1, 2, 4, 8, 16}
        assert 2.8e6 <= d.macs(32) <= 3.2e6
    assert len({d.depths for d in designs}) > 10, "the sampler should spread over the space"


def test_sampler_is_deterministic_and_seeded() -> None:
    assert anynet.sample(5, seed=1) == anynet.sample(5, seed=1)
    assert anynet.sample(5, seed=1) != anynet.sample(5, seed=2)


def test_paper_space_band_is_tuggeners() -> None:
    d = anynet.sample(1, anynet.PAPER, seed=0)[0]
    assert 340e6 <= d.macs(224, 1000) <= 400e6 + 1000 * d.widths[-1]
    assert d.stem_stride == 2 and d.strides == (2, 2, 2, 2)


def test_impossible_band_says_what_to_do() -> None:
    space = anynet.Space(max_depth=1, max_width=8, macs=(1e12, 2e12), size=32)
    with pytest.raises(TradeoffsError, match="widen the complexity band"):
        anynet.sample(1, space, max_tries=200)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_analytic_multiply_adds_match_torch_flop_counter(seed: int) -> None:
    design = anynet.sample(1, TINY, seed=seed)[0]
    net = anynet.AnyNet(design, 7).eval()
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 32, 32))
    assert design.macs(32, 7) == counter.get_total_flops() // 2


def test_builder_follows_the_design_without_weights() -> None:
    design = anynet.Design(depths=(1, 2, 1, 3), widths=(16, 32, 48, 64), bottlenecks=(1, 2, 4, 1), groups=(4, 8, 4, 16))
    model = anynet.build(design, num_classes=5, seed=0)
    stages = model.module.stages
    assert [len(list(s.children())) for s in stages] == [1, 2, 1, 3]
    convs = [m for m in stages[1].modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs[0].groups == (32 // 2) // 8 and convs[0].out_channels == 16
    with torch.no_grad():
        assert model.module(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert model.meta.num_classes == 5 and model.meta.top1 is None
    same = anynet.build(design, num_classes=5, seed=0).module.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.module.state_dict().items())


def test_invalid_design_is_refused() -> None:
    with pytest.raises(TradeoffsError, match="group width"):
        anynet.Design(depths=(1, 1, 1, 1), widths=(16, 16, 16, 24), bottlenecks=(1, 1, 1, 1), groups=(1, 1, 1, 16))
    with pytest.raises(TradeoffsError, match="one value per stage"):
        anynet.Design(depths=(1, 1, 1), widths=(16, 16, 16), bottlenecks=(1, 1, 1), groups=(1, 1, 1))


def test_space_from_json_lists_equals_the_tuple_space() -> None:
    as_lists = anynet.Space(max_depth=4, max_width=256, groups=[1, 2, 4, 8, 16], macs=[2.8e6, 3.2e6], size=32,
                            stem_width=16, stem_stride=1, strides=[1, 2, 2, 2])
    assert as_lists == anynet.CIFAR and anynet.sample(3, as_lists) == anynet.sample(3, anynet.CIFAR)


# --- data for the sweep ----------------------------------------------------------------------------------------------

def test_to_rgb_and_class_subset() -> None:
    grey = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    rgb = data.to_rgb(grey, 8)
    assert rgb.shape == (2, 8, 8, 3) and (rgb[..., 0] == grey).all() and (rgb[..., 2] == grey).all()
    assert data.to_rgb(grey, 32).shape == (2, 32, 32, 3)
    with pytest.raises(TradeoffsError, match="uint8"):
        data.to_rgb(grey.astype(np.float32), 32)
    ds = data._image_dataset(np.zeros((9, 4, 4), np.uint8), np.array([0, 1, 2] * 3), ["a", "b", "c"], "x", "test")
    sub = data.class_subset(ds, [2, 0], 2, seed=0)
    assert sorted(sub.labels.values.tolist()) == [0, 0, 1, 1] and list(sub.class_name.values) == ["c", "a"]
    with pytest.raises(TradeoffsError, match="fewer than n_per_class"):
        data.class_subset(ds, [1], 4)


def test_digits_split_is_disjoint_and_balanced() -> None:
    x_tr, y_tr, x_te, y_te = anynet.arrays(anynet.Data("digits", 30, 20, (4, 9, 1)))
    assert x_tr.shape == (90, 32, 32, 3) and x_te.shape == (60, 32, 32, 3)
    assert np.bincount(y_tr).tolist() == [30] * 3 and np.bincount(y_te).tolist() == [20] * 3
    flat_tr, flat_te = {a.tobytes() for a in x_tr}, {a.tobytes() for a in x_te}
    assert not flat_tr & flat_te, "train and test images overlap"


def test_image_folder_for_the_full_profile(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("n01", "n02", "n03"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.JPEG")
    spec = anynet.Data(f"folder:{tmp_path}", 3, 2, (2, 0), size=16)
    x_tr, y_tr, x_te, y_te = anynet.arrays(spec)
    assert x_tr.shape == (6, 16, 16, 3) and x_te.shape == (4, 16, 16, 3) and set(y_tr) == {0, 1}
    assert spec.label == f"{tmp_path.name}-2"
    with pytest.raises(TradeoffsError, match="fewer than n_per_class"):
        data.image_folder(tmp_path, 6, 16)
    with pytest.raises(TradeoffsError, match="no class folders"):
        data.image_folder(tmp_path / "n01", 1, 16)


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(TradeoffsError, match="unknown dataset"):
        anynet.arrays(anynet.Data("imagenet", 1, 1))


# --- the sweep -------------------------------------------------------------------------------------------------------

def _tasks() -> list[anynet.Task]:
    recipe = train.Recipe(epochs=1, batch_size=16, lr=0.05)
    datas = [anynet.Data("digits", 16, 8, (0, 1, 2)), anynet.Data("digits", 16, 8, (5, 6))]
    return [anynet.Task(d, s, recipe) for d in anynet.sample(2, TINY, seed=0) for s in datas]


def _keys(tasks: list[anynet.Task]) -> list[str]:
    return [results.content_key("test-task", repr(t)) for t in tasks]


def test_task_is_deterministic_on_cpu(isolated: Path, one_thread: None) -> None:
    task = _tasks()[0]
    a = anynet.run_task(task)
    for path in (isolated / "cache" / "train").rglob("*.pt"):  # retrain from scratch, not from the checkpoint
        path.unlink()
    b = anynet.run_task(task)
    assert a.test_accuracy.item() == b.test_accuracy.item() and a.train_loss.item() == b.train_loss.item()
    assert a.sizes == {"architecture": 1, "dataset": 1, "seed": 1}
    assert len(list((isolated / "cache" / "train").rglob("epoch_*.pt"))) == 1, "a sweep run keeps only its last epoch"


@pytest.mark.slow
def test_dask_gives_the_serial_results(isolated: Path, one_thread: None) -> None:
    tasks, keys = _tasks(), _keys(_tasks())
    serial = sweep.combine(sweep.run(anynet.run_task, tasks, keys, kind="serial", scheduler=None))
    for path in (isolated / "cache" / "train").rglob("*.pt"):
        path.unlink()
    dask = sweep.combine(sweep.run(anynet.run_task, tasks, keys, kind="dask", scheduler="local", n_workers=2))
    assert serial.sizes == {"architecture": 2, "dataset": 2, "seed": 1}
    for name in ("test_accuracy", "train_accuracy", "train_loss"):
        np.testing.assert_array_equal(serial[name].values, dask[name].values)


def test_a_killed_sweep_resumes_without_redoing_finished_tasks(isolated: Path, one_thread: None) -> None:
    tasks, keys = _tasks(), _keys(_tasks())
    broken = [*tasks[:2], anynet.Task(tasks[2].design, anynet.Data("no-such-data", 1, 1), tasks[2].recipe), *tasks[3:]]
    with pytest.raises(TradeoffsError):  # the sweep dies at the third task, as if killed there
        sweep.run(anynet.run_task, broken, keys, kind="k", scheduler=None)
    done = {k: results.cached_path("k", k).stat().st_mtime_ns for k in keys[:2]}
    assert not results.cached_path("k", keys[2]).exists()
    out = sweep.run(anynet.run_task, tasks, keys, kind="k", scheduler=None)
    assert all(results.cached_path("k", k).stat().st_mtime_ns == t for k, t in done.items()), "finished tasks redone"
    assert len(out) == 4 and all(ds is not None for ds in out)


def test_sweep_refuses_duplicate_keys(isolated: Path) -> None:
    with pytest.raises(TradeoffsError, match="distinct key"):
        sweep.run(anynet.run_task, _tasks()[:2], ["a", "a"], kind="k", scheduler=None)


def test_unreachable_scheduler_says_what_to_do(isolated: Path) -> None:
    with pytest.raises(TradeoffsError, match="Dask scheduler"):
        sweep.run(anynet.run_task, _tasks()[:1], ["a"], kind="k", scheduler="tcp://127.0.0.1:1", timeout_s=2)


def test_damaged_cache_entry_is_recomputed(isolated: Path) -> None:
    path = results.cached_path("k", "abc")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a cache entry")
    assert results.read_cached("k", "abc") is None and not path.exists()


# --- the statistic of the claim --------------------------------------------------------------------------------------

def test_corr_diff_sign_and_pairing() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(40, 2))
    close, unrelated = target.sum(1) + 0.3 * rng.normal(size=40), rng.normal(size=40)
    up = stats.corr_diff(target, close, unrelated)
    assert up["estimate"] > 0.5 and 0 < up["ci_low"] < up["estimate"] < up["ci_high"]
    down = stats.corr_diff(target, unrelated, close)
    assert down["estimate"] == pytest.approx(-up["estimate"]) and down["ci_high"] < 0
    same = stats.corr_diff(target[:, 0], close, close)
    assert same["estimate"] == 0 and np.isnan(same["ci_low"]), "a collapsed interval is NaN, never a point"
    with pytest.raises(TradeoffsError):
        stats.corr_diff(target, close[:10], unrelated)
