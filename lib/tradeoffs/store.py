"""Stored results: one NetCDF file per result with its provenance, written atomically, read with clear errors,
reloaded when its inputs are unchanged (`load_or_compute`) and compared within its tolerance (`compare`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .claims import CLAIMS
from .errors import TradeoffsError
from .provenance import provenance
from .results import atomic_to_netcdf, netcdf_safe, results_dir

SCHEMA_VERSION = 1


def write(ds: xr.Dataset, path: Path, *, profile: str, parameters: dict[str, Any], elapsed_s: float,
          inputs_key: str = "", tolerance: dict[str, Any] | None = None) -> Path:
    """Write `ds` to `path` atomically, with provenance attrs."""
    ds = ds.copy()
    ds.attrs = netcdf_safe({**ds.attrs, "schema_version": SCHEMA_VERSION,
                            **provenance(profile, parameters, elapsed_s, inputs_key),
                            "tolerance": json.dumps(tolerance or {"rtol": 1e-6, "atol": 1e-9})})
    for var in ds.variables.values():
        var.attrs = netcdf_safe(var.attrs)
        if var.dtype.kind in "UO":  # a fixed width read from an earlier file would truncate longer labels
            var.encoding.pop("dtype", None)
    atomic_to_netcdf(ds, path)
    return path


def save(ds: xr.Dataset, name: str, *, profile: str, parameters: dict[str, Any], elapsed_s: float,
         inputs_key: str = "", tolerance: dict[str, Any] | None = None) -> Path:
    """Write `ds` to `<results_dir>/<name>.nc` atomically, with provenance attrs; returns the path."""
    return write(ds, results_dir() / f"{name}.nc", profile=profile, parameters=parameters, elapsed_s=elapsed_s,
                 inputs_key=inputs_key, tolerance=tolerance)


def _notebook_of(name: str) -> str:
    return next((nb for nb in (*CLAIMS, "performance", "score_model") if name.startswith(nb)), "NOTEBOOK")


def load(name: str, directory: Path | None = None) -> xr.Dataset:
    """Read a stored results file fully into memory; clear errors for missing, truncated or old files."""
    path = (directory or results_dir()) / f"{name}.nc"
    rerun = f"rerun `python -m tradeoffs.run --only {_notebook_of(name)}` (or `make book`)"
    if not path.exists():
        raise TradeoffsError(f"no results file {path}: {rerun}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, ValueError, RuntimeError) as exc:
        raise TradeoffsError(f"results file {path} is unreadable ({type(exc).__name__}; truncated?): delete it and {rerun}") from None
    found = int(ds.attrs.get("schema_version", 0))
    if found != SCHEMA_VERSION:
        raise TradeoffsError(f"results file {path} has schema v{found}, this code reads v{SCHEMA_VERSION}: delete it and {rerun}")
    return ds


def parameters_of(ds: xr.Dataset) -> dict[str, Any]:
    """The parameters a results file was computed with."""
    return json.loads(ds.attrs.get("parameters", "{}"))


def recompute_requested() -> bool:
    """True when the user asked to recompute stored results (`make reproduce`)."""
    return os.environ.get("TRADEOFFS_RECOMPUTE", "") not in ("", "0")


def reuse_only() -> bool:
    """True when stored results must be reused, never recomputed (`TRADEOFFS_REUSE_ONLY=1`: checks a refactor)."""
    return os.environ.get("TRADEOFFS_REUSE_ONLY", "") not in ("", "0")


def load_or_compute(name: str, inputs_key: str, compute: Callable[[], xr.Dataset], *, profile: str,
                    parameters: dict[str, Any], tolerance: dict[str, Any] | None = None) -> xr.Dataset:
    """Load `name` if it was stored for the same inputs key; otherwise compute, save and return it."""
    path = results_dir() / f"{name}.nc"
    if path.exists() and not recompute_requested():
        try:
            ds = load(name)
        except TradeoffsError:
            ds = None
        if ds is not None and ds.attrs.get("inputs_key") == inputs_key:
            return ds
    if reuse_only():
        raise TradeoffsError(f"{name} would be recomputed (no stored file with inputs key {inputs_key[:12]}…) but "
                             "TRADEOFFS_REUSE_ONLY is set: unset it to recompute")
    start = time.perf_counter()
    ds = compute()
    save(ds, name, profile=profile, parameters=parameters, elapsed_s=time.perf_counter() - start,
         inputs_key=inputs_key, tolerance=tolerance)
    return load(name)


def compare(stored: xr.Dataset, fresh: xr.Dataset) -> list[str]:
    """Differences beyond the tolerance, one line each (empty list = reproduced).

    The tolerance is the one the code declares now (the fresh file's; the stored file's if the fresh one has none):
    `rtol` and `atol` for every numeric variable, `variables` (name -> {"rtol", "atol"}) where a variable's measured
    rerun spread is wider, `outcomes_only` to compare only the non-numeric variables (a verdict file whose numbers
    come from runs that are not bit-reproducible: its outcomes must hold, its numbers follow the data's tolerance),
    and `timings`: variables that record wall-clock time, kept as provenance, not compared.
    """
    tol = json.loads(fresh.attrs.get("tolerance") or stored.attrs.get("tolerance", "{}"))
    problems = []
    for name in sorted(set(stored.data_vars) | set(fresh.data_vars)):
        if name in tol.get("timings", ()):
            continue
        if name not in stored or name not in fresh:
            problems.append(f"{name}: present in only one file")
            continue
        a, b = xr.align(stored[name], fresh[name], join="outer")
        if a.shape != stored[name].shape or a.shape != fresh[name].shape:
            problems.append(f"{name}: coordinates differ")
            continue
        own = {**tol, **tol.get("variables", {}).get(name, {})}
        rtol, atol = float(own.get("rtol", 1e-6)), float(own.get("atol", 1e-9))
        if np.issubdtype(a.dtype, np.number):
            if tol.get("outcomes_only"):
                continue
            bad = ~np.isclose(a.values, b.values, rtol=rtol, atol=atol, equal_nan=True)
            if bad.any():
                worst = float(np.nanmax(np.abs(a.values - b.values)))
                problems.append(f"{name}: {int(bad.sum())} of {bad.size} values differ (max |diff| {worst:.3g}; rtol {rtol}, atol {atol})")
        elif not np.array_equal(a.values, b.values):
            problems.append(f"{name}: values differ")
    return problems


def stored_names(directory: Path | None = None) -> Iterable[str]:
    """Names of the results files in a directory."""
    return sorted(p.stem for p in (directory or results_dir()).glob("*.nc"))
