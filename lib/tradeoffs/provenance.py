"""Where a result comes from: the commit (and whether the tree had uncommitted changes), package versions, device."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from .claims import PROFILES
from .errors import TradeoffsError
from .results import repo_root

OUTPUTS = (":!data/results", ":!book/executed")  # what a run writes: not a change of the code that computes it
_VERSIONED = ("tradeoffs", "torch", "torchvision", "timm", "numpy", "xarray", "pandas", "pingouin", "statsmodels",
              "ai-edge-litert")


def _git(*args: str) -> str:
    root = repo_root()
    if root is None:
        return ""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def commit() -> str:
    """The checkout's HEAD commit ('' outside a git checkout)."""
    return _git("rev-parse", "HEAD")


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
        "git_commit": commit() or "unknown",
        "git_dirty": int(bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUTS))),
        "profile": profile,
        "parameters": json.dumps(parameters, sort_keys=True, default=str),
        "versions": json.dumps(versions(), sort_keys=True),
        "device": device_name(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_s": float(elapsed_s),
        "inputs_key": inputs_key,
    }
