"""One number per quantity: a measure of one model on one evaluation set has one value across the stored results.

Results files that hold the same per-model measure for the same models must say which images they were computed on
(`EVALUATED_ON`); on the same images the values must agree, and files that overlap without saying fail the test."""

from __future__ import annotations

import itertools
import sys
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results"
CIFAR_TEST = 10_000
EVALUATED_ON: dict[str, Callable[[xr.Dataset, dict], tuple[str, int]]] = {  # file -> (images, how many)
    "inverted_u_cifar": lambda ds, p: ("CIFAR-10 test (first n)", int(ds.attrs["n_eval"])),
    "human_alignment_cifar10h": lambda ds, p: (("CIFAR-10 test (first n)", CIFAR_TEST) if p["n_cifar"] is None  # all
                                               else ("CIFAR-10 test (seeded random n)", p["n_cifar"])),
}


def per_model(profile: str = "default") -> dict[str, xr.Dataset]:
    """The stored files' variables indexed by model alone."""
    found = {}
    for path in sorted(RESULTS.glob(f"*_{profile}.nc")):
        with xr.open_dataset(path) as ds:
            names = [v for v in ds.data_vars if ds[v].dims == ("model",)]
            if names:
                found[path.stem.removesuffix(f"_{profile}")] = ds[names].load().assign_attrs(ds.attrs)
    return found


def test_overlapping_measures_say_their_images_and_agree_on_the_same_images() -> None:
    files = per_model()
    if not files:
        pytest.skip("no stored default results")
    for (a, da), (b, db) in itertools.combinations(files.items(), 2):
        shared_models = sorted(set(da.model.values) & set(db.model.values))
        shared_vars = sorted(set(da.data_vars) & set(db.data_vars))
        if not (shared_models and shared_vars):
            continue
        assert a in EVALUATED_ON and b in EVALUATED_ON, f"{a} and {b} both hold {shared_vars}: declare their images"
        ea = EVALUATED_ON[a](da, json.loads(da.attrs["parameters"]))
        eb = EVALUATED_ON[b](db, json.loads(db.attrs["parameters"]))
        if ea != eb:
            continue  # different images: the pages state n beside each number
        for v in shared_vars:
            np.testing.assert_allclose(da[v].sel(model=shared_models), db[v].sel(model=shared_models), rtol=1e-6,
                                       err_msg=f"{v} differs between {a} and {b} on {ea}")


def test_a_disagreement_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = json.dumps({"n_cifar": None})
    for name, value in (("inverted_u_cifar", 0.8), ("human_alignment_cifar10h", 0.7)):
        xr.Dataset({"accuracy": ("model", [value])}, coords={"model": ["m"]},
                   attrs={"n_eval": CIFAR_TEST, "parameters": p}).to_netcdf(tmp_path / f"{name}_default.nc")
    monkeypatch.setattr(sys.modules[__name__], "RESULTS", tmp_path)
    with pytest.raises(AssertionError, match="accuracy differs"):
        test_overlapping_measures_say_their_images_and_agree_on_the_same_images()
