"""Results store (NetCDF with provenance, written atomically) and a content-keyed cache for intermediates."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import xarray as xr

from .claims import CLAIMS
from .errors import TradeoffsError

SCHEMA_VERSION = 1
PROFILES = ("smoke", "default", "full")
OUTPUTS = (":!data/results", ":!book/executed")  # what a run writes: not a change of the code that computes it
_VERSIONED = ("tradeoffs", "torch", "torchvision", "timm", "numpy", "xarray", "pandas", "pingouin", "statsmodels", "ai-edge-litert")


def repo_root() -> Path | None:
    """The project checkout this package runs from (None when installed elsewhere, e.g. on Colab from a wheel)."""
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for d in (start, *start.parents):
            if (d / "_config.yml").exists() and (d / "lib" / "tradeoffs").is_dir():
                return d
    return None


def results_dir() -> Path:
    """`TRADEOFFS_RESULTS`, else `<repo>/data/results`, else `./data/results`."""
    env = os.environ.get("TRADEOFFS_RESULTS")
    root = repo_root()
    path = Path(env) if env else (root / "data" / "results" if root else Path("data/results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """`TRADEOFFS_CACHE`, else `<repo>/.cache`, else the per-user cache directory."""
    env = os.environ.get("TRADEOFFS_CACHE")
    if env:
        path = Path(env)
    elif (root := repo_root()) is not None:
        path = root / ".cache"
    else:
        import pooch

        path = Path(pooch.os_cache("tradeoffs")) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _git(*args: str) -> str:
    root = repo_root()
    if root is None:
        return ""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def device_name() -> str:
    """The accelerator (or CPU) this process computes on."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def provenance(profile: str, parameters: dict[str, Any], elapsed_s: float, inputs_key: str = "") -> dict[str, Any]:
    """Attributes stored on every results file (NetCDF-safe: str and numbers only)."""
    if profile not in PROFILES:
        raise TradeoffsError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    return {
        "schema_version": SCHEMA_VERSION,
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": int(bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUTS))),
        "profile": profile,
        "parameters": json.dumps(parameters, sort_keys=True, default=str),
        "versions": json.dumps(versions(), sort_keys=True),
        "device": device_name(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_s": float(elapsed_s),
        "inputs_key": inputs_key,
    }


def _netcdf_safe(attrs: dict[str, Any]) -> dict[str, Any]:
    safe = {}
    for k, v in attrs.items():
        if isinstance(v, bool):
            v = int(v)
        elif isinstance(v, (dict, list, tuple)) and not (isinstance(v, (list, tuple)) and all(isinstance(i, (int, float)) for i in v)):
            v = json.dumps(v, sort_keys=True, default=str)
        elif v is None:
            v = ""
        safe[k] = v
    return safe


def _atomic_to_netcdf(ds: xr.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(ds: xr.Dataset, path: Path, *, profile: str, parameters: dict[str, Any], elapsed_s: float,
          inputs_key: str = "", tolerance: dict[str, float] | None = None) -> Path:
    """Write `ds` to `path` atomically, with provenance attrs."""
    ds = ds.copy()
    ds.attrs = _netcdf_safe({**ds.attrs, **provenance(profile, parameters, elapsed_s, inputs_key),
                             "tolerance": json.dumps(tolerance or {"rtol": 1e-6, "atol": 1e-9})})
    for var in ds.variables.values():
        var.attrs = _netcdf_safe(var.attrs)
        if var.dtype.kind in "UO":  # a fixed width read from an earlier file would truncate longer labels
            var.encoding.pop("dtype", None)
    _atomic_to_netcdf(ds, path)
    return path


def save(ds: xr.Dataset, name: str, *, profile: str, parameters: dict[str, Any], elapsed_s: float,
         inputs_key: str = "", tolerance: dict[str, float] | None = None) -> Path:
    """Write `ds` to `<results_dir>/<name>.nc` atomically, with provenance attrs; returns the path."""
    return write(ds, results_dir() / f"{name}.nc", profile=profile, parameters=parameters, elapsed_s=elapsed_s,
                 inputs_key=inputs_key, tolerance=tolerance)


def _notebook_of(name: str) -> str:
    return next((nb for nb in (*CLAIMS, "performance") if name.startswith(nb)), "NOTEBOOK")


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


# ---------------------------------------------------------------- content keys and the cache

def _feed(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        h.update(f"ndarray{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    elif hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor
        _feed(h, obj.detach().cpu().numpy())
    elif isinstance(obj, ModuleType):
        h.update(f"module:{obj.__name__}".encode())
        h.update(inspect.getsource(obj).encode())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(str(k).encode() + b":")
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, Path):
        h.update(b"file:" + file_digest(obj).encode())
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def content_key(*parts: Any) -> str:
    """sha256 over everything that determines a result: arrays, parameters, files (by content), modules (by source)."""
    h = hashlib.sha256()
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def cached_path(kind: str, key: str) -> Path:
    """Where `cached(kind, key, ...)` stores its Dataset."""
    return cache_dir() / kind / key[:2] / f"{key}.nc"


def read_cached(kind: str, key: str) -> xr.Dataset | None:
    """The Dataset stored under (kind, key), or None; a damaged entry is deleted (recomputed, never trusted)."""
    path = cached_path(kind, key)
    if path.exists():
        try:
            with xr.open_dataset(path, engine="netcdf4") as ds:
                return ds.load()
        except (OSError, ValueError, RuntimeError):
            path.unlink(missing_ok=True)
    return None


def cached(kind: str, key: str, compute: Callable[[], xr.Dataset]) -> xr.Dataset:
    """Return the Dataset stored under (kind, key), computing and storing it atomically on a miss.

    Because each piece is stored as soon as it is computed, a killed run resumes at the first missing piece.
    """
    ds = read_cached(kind, key)
    if ds is not None:
        return ds
    ds = compute().copy()
    ds.attrs = _netcdf_safe({**ds.attrs, "cache_key": key})
    _atomic_to_netcdf(ds, cached_path(kind, key))
    return ds


def recompute_requested() -> bool:
    """True when the user asked to recompute stored results (`make reproduce`)."""
    return os.environ.get("TRADEOFFS_RECOMPUTE", "") not in ("", "0")


def reuse_only() -> bool:
    """True when stored results must be reused, never recomputed (`TRADEOFFS_REUSE_ONLY=1`: checks a refactor)."""
    return os.environ.get("TRADEOFFS_REUSE_ONLY", "") not in ("", "0")


def load_or_compute(name: str, inputs_key: str, compute: Callable[[], xr.Dataset], *, profile: str,
                    parameters: dict[str, Any], tolerance: dict[str, float] | None = None) -> xr.Dataset:
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
    """Differences beyond the stored file's tolerance, one line each (empty list = reproduced)."""
    tol = json.loads(stored.attrs.get("tolerance", "{}"))
    rtol, atol = float(tol.get("rtol", 1e-6)), float(tol.get("atol", 1e-9))
    problems = []
    for name in sorted(set(stored.data_vars) | set(fresh.data_vars)):
        if name not in stored or name not in fresh:
            problems.append(f"{name}: present in only one file")
            continue
        a, b = xr.align(stored[name], fresh[name], join="outer")
        if a.shape != stored[name].shape or a.shape != fresh[name].shape:
            problems.append(f"{name}: coordinates differ")
            continue
        if np.issubdtype(a.dtype, np.number):
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
