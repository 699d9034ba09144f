"""Results store: atomic NetCDF round trip with provenance, bad files, the content-keyed cache and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tradeoffs import results, store
from tradeoffs.errors import TradeoffsError


def _ds(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    return xr.Dataset({"score": (("model", "dataset"), rng.random((3, 2)))},
                      coords={"model": ["a", "b", "c"], "dataset": ["x", "y"], "top1": ("model", [50.0, 60.0, 70.0])},
                      attrs={"note": {"nested": [1, "two"]}})


def test_round_trip_with_provenance(isolated: Path) -> None:
    path = store.save(_ds(), "claim_smoke", profile="smoke", parameters={"models": ["a", "b"], "n": 3}, elapsed_s=1.5)
    assert path == isolated / "results" / "claim_smoke.nc"
    back = store.load("claim_smoke")
    xr.testing.assert_allclose(back.drop_attrs(), _ds().drop_attrs())
    for key in ("git_commit", "git_dirty", "profile", "parameters", "versions", "device", "created_utc", "elapsed_s", "inputs_key"):
        assert key in back.attrs, key
    assert back.attrs["profile"] == "smoke"
    assert store.parameters_of(back) == {"models": ["a", "b"], "n": 3}
    assert "torch" in json.loads(back.attrs["versions"])
    assert json.loads(back.attrs["note"]) == {"nested": [1, "two"]}
    assert not list((isolated / "results").glob("*.tmp")), "temporary files left behind"


def test_atomic_write_keeps_old_file_on_failure(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save(_ds(0), "claim_smoke", profile="smoke", parameters={}, elapsed_s=0)

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(xr.Dataset, "to_netcdf", boom)
        store.save(_ds(1), "claim_smoke", profile="smoke", parameters={}, elapsed_s=0)
    xr.testing.assert_allclose(store.load("claim_smoke").drop_attrs(), _ds(0).drop_attrs())
    assert not list((isolated / "results").glob(".*tmp"))


def test_bad_files_give_one_clear_line(isolated: Path) -> None:
    with pytest.raises(TradeoffsError, match="no results file.*--only human_alignment"):
        store.load("human_alignment_trials_default")
    path = store.save(_ds(), "claim_smoke", profile="smoke", parameters={}, elapsed_s=0)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TradeoffsError, match="unreadable.*delete it"):
        store.load("claim_smoke")
    old = _ds()
    old.attrs = {"schema_version": 0}
    old.to_netcdf(isolated / "results" / "old_smoke.nc")
    with pytest.raises(TradeoffsError, match="schema v0"):
        store.load("old_smoke")
    with pytest.raises(TradeoffsError, match="unknown profile"):
        store.save(_ds(), "x", profile="huge", parameters={}, elapsed_s=0)


def test_content_key_depends_on_every_part(tmp_path: Path) -> None:
    a = np.arange(6.0)
    base = results.content_key("m", a, {"layers": ["l1"]})
    assert base == results.content_key("m", a.copy(), {"layers": ["l1"]})
    assert base != results.content_key("m", a + 1e-9, {"layers": ["l1"]})
    assert base != results.content_key("m", a.astype(np.float32), {"layers": ["l1"]})
    assert base != results.content_key("m", a, {"layers": ["l2"]})
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    k1 = results.content_key(f)
    f.write_bytes(b"abd")
    assert k1 != results.content_key(f)
    assert results.content_key(results) == results.content_key(results)


def test_cache_hit_miss_and_resume(isolated: Path) -> None:
    calls: list[int] = []

    def piece(i: int) -> xr.Dataset:
        calls.append(i)
        if i == 2 and len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed while computing the third piece
        return xr.Dataset({"v": ("k", np.full(4, float(i)))})

    with pytest.raises(KeyboardInterrupt):
        for i in range(4):
            results.cached("test", results.content_key("piece", i), lambda i=i: piece(i))
    assert calls == [0, 1, 2]
    out = [results.cached("test", results.content_key("piece", i), lambda i=i: piece(i)) for i in range(4)]
    assert calls == [0, 1, 2, 2, 3], "finished pieces must not be recomputed after the kill"
    assert [float(d.v[0]) for d in out] == [0.0, 1.0, 2.0, 3.0]
    again = [results.cached("test", results.content_key("piece", i), lambda i=i: piece(i)) for i in range(4)]
    assert calls == [0, 1, 2, 2, 3] and float(again[3].v[0]) == 3.0


def test_damaged_cache_entry_is_recomputed(isolated: Path) -> None:
    key = results.content_key("damaged")
    results.cached("test", key, lambda: xr.Dataset({"v": ("k", np.ones(3))}))
    entry = results.cached_path("test", key)
    entry.write_bytes(b"garbage")
    out = results.cached("test", key, lambda: xr.Dataset({"v": ("k", np.zeros(3))}))
    assert float(out.v.sum()) == 0.0


def test_a_cache_hit_returns_what_the_miss_returned_and_refuses_a_misplaced_entry(isolated: Path) -> None:
    made = xr.Dataset({"v": (("k", "c"), np.arange(6.0).reshape(3, 2))}, coords={"k": ["a", "b", "c"]},
                      attrs={"flag": True, "n": None, "sizes": [1, 2]})
    first = results.cached("test", results.content_key("same"), lambda: made)
    hit = results.cached("test", results.content_key("same"), lambda: pytest.fail("recomputed"))
    xr.testing.assert_identical(hit, first)
    assert hit.attrs == first.attrs and hit.k.dtype == first.k.dtype
    moved = results.cached_path("test", results.content_key("other"))
    moved.parent.mkdir(parents=True, exist_ok=True)
    results.cached_path("test", results.content_key("same")).rename(moved)  # an entry under the wrong name
    assert results.read_cached("test", results.content_key("other")) is None and not moved.exists()


def test_load_or_compute_reuses_only_matching_key(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = []

    def compute() -> xr.Dataset:
        n.append(1)
        return _ds(len(n))

    store.load_or_compute("c_default", "k1", compute, profile="default", parameters={})
    store.load_or_compute("c_default", "k1", compute, profile="default", parameters={})
    assert len(n) == 1
    store.load_or_compute("c_default", "k2", compute, profile="default", parameters={})
    assert len(n) == 2
    monkeypatch.setenv("TRADEOFFS_RECOMPUTE", "1")
    store.load_or_compute("c_default", "k2", compute, profile="default", parameters={})
    assert len(n) == 3


def test_background_writes_keep_the_values_of_the_moment_and_are_read_back(isolated: Path) -> None:
    key = results.content_key("background", 1)
    ds = results.cached("test", key, lambda: xr.Dataset({"v": ("k", np.arange(3.0))}), background=True)
    ds["v"].values[:] = -1  # the caller reuses its array before the write may have happened
    again = results.read_cached("test", key)  # waits for the queued write
    assert again is not None and again["v"].values.tolist() == [0.0, 1.0, 2.0]
    results.flush()
    assert results.cached_path("test", key).exists() and not results._PENDING


def test_a_failed_background_write_warns_and_leaves_no_entry(isolated: Path, monkeypatch) -> None:
    def broken(ds, path):
        raise OSError("disk full")

    monkeypatch.setattr(results, "_write_entry", broken)
    key = results.content_key("background", 2)
    with pytest.warns(UserWarning, match="disk full"):
        results.cached("test", key, lambda: xr.Dataset({"v": ("k", np.ones(2))}), background=True)
        results.flush()
    assert not results.cached_path("test", key).exists()


def test_compare_reports_differences_beyond_tolerance(isolated: Path) -> None:
    store.save(_ds(0), "c_default", profile="default", parameters={}, elapsed_s=0, tolerance={"rtol": 0.0, "atol": 1e-3})
    stored = store.load("c_default")
    assert store.compare(stored, _ds(0)) == []
    nudged = _ds(0)
    nudged["score"][0, 0] += 1e-4
    assert store.compare(stored, nudged) == []
    nudged["score"][0, 0] += 1e-2
    (problem,) = store.compare(stored, nudged)
    assert problem.startswith("score: 1 of 6 values differ")


def test_compare_uses_the_declared_per_variable_and_outcome_tolerances(isolated: Path) -> None:
    """The code's current tolerance (the fresh file's) decides; a variable may carry its measured rerun spread."""
    store.save(_ds(0), "c_default", profile="default", parameters={}, elapsed_s=0, tolerance={"rtol": 0.0, "atol": 1e-3})
    stored, nudged = store.load("c_default"), _ds(0)
    nudged["score"][0, 0] += 0.05
    nudged.attrs["tolerance"] = json.dumps({"rtol": 0.0, "atol": 1e-3, "variables": {"score": {"atol": 0.06}}})
    assert store.compare(stored, nudged) == []
    nudged.attrs["tolerance"] = json.dumps({"rtol": 0.0, "atol": 1e-3, "variables": {"score": {"atol": 0.01}}})
    assert store.compare(stored, nudged)[0].startswith("score: 1 of 6 values differ")
    nudged.attrs["tolerance"] = json.dumps({"outcomes_only": True})
    assert store.compare(stored, nudged) == []
    nudged.attrs["tolerance"] = json.dumps({"rtol": 0.0, "atol": 1e-3, "timings": ["score"]})  # wall-clock: not compared
    assert store.compare(stored, nudged) == []
    nudged.attrs["tolerance"] = json.dumps({"rtol": 0.0, "atol": 1e-3, "timings": ["other"]})
    assert store.compare(stored, nudged)[0].startswith("score: 1 of 6 values differ")


def test_labels_are_not_truncated_by_an_inherited_string_width(isolated):
    """Cells read back from the cache carry a fixed string width; a combined file must keep longer labels whole."""
    short = xr.Dataset({"v": ("dataset", [1.0])}, coords={"dataset": ["cifar10-10"]})
    short["dataset"].encoding["dtype"] = np.dtype("<U10")
    combined = xr.concat([short, xr.Dataset({"v": ("dataset", [2.0])}, coords={"dataset": ["fashion_mnist"]})],
                         dim="dataset")
    combined["dataset"].encoding["dtype"] = np.dtype("<U10")
    store.save(combined, "labels_smoke", profile="smoke", parameters={}, elapsed_s=0.0)
    assert list(store.load("labels_smoke").dataset.values) == ["cifar10-10", "fashion_mnist"]
