"""Grids of independent tasks on Dask distributed, each result cached by content as soon as it finishes.

`run(fn, tasks, keys, kind=...)` maps `fn` over `tasks` on a `LocalCluster` (default), on any scheduler address, or
serially in this process (`scheduler=None`), and returns the Datasets in task order. Every result is stored with
`results.cached(kind, key)` by the worker that computed it, so a killed sweep resumes without redoing finished tasks;
tasks already in the cache are read back here and never submitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import xarray as xr
from tqdm.auto import tqdm

from . import results
from .errors import TradeoffsError

T = TypeVar("T")


def _cached(kind: str, key: str, fn: Callable[[T], xr.Dataset], task: T) -> xr.Dataset:
    return results.cached(kind, key, lambda: fn(task))


def run(fn: Callable[[T], xr.Dataset], tasks: Sequence[T], keys: Sequence[str], *, kind: str,
        scheduler: str | None = "local", n_workers: int = 2, threads_per_worker: int = 1, timeout_s: float = 30,
        desc: str = "sweep") -> list[xr.Dataset]:
    """`[fn(t) for t in tasks]`, cached under (`kind`, key); `scheduler`: "local", a Dask address, or None (serial).

    `fn` and the tasks must be picklable (module-level functions, dataclasses). `n_workers` and `threads_per_worker`
    size the LocalCluster only; `timeout_s` bounds connecting to a scheduler.
    """
    if len(tasks) != len(keys) or len(set(keys)) != len(keys):
        raise TradeoffsError(f"sweep needs one distinct key per task ({len(tasks)} tasks, {len(set(keys))} keys).")
    out = [results.read_cached(kind, key) for key in keys]
    todo = [i for i, ds in enumerate(out) if ds is None]
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=desc, unit="task")
    if scheduler is None:
        for i in todo:
            out[i] = _cached(kind, keys[i], fn, tasks[i])
            bar.update()
    elif todo:
        _distributed(fn, tasks, keys, todo, out, kind, scheduler, n_workers, threads_per_worker, timeout_s, bar)
    bar.close()
    return out  # type: ignore[return-value]


def _distributed(fn, tasks, keys, todo, out, kind, scheduler, n_workers, threads_per_worker, timeout_s, bar) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        client = Client(cluster if cluster is not None else scheduler, timeout=f"{timeout_s}s")
    except OSError as err:
        raise TradeoffsError(f"cannot reach the Dask scheduler {scheduler!r} ({err}); start it (`dask scheduler`) "
                             "or use scheduler='local'.") from err
    try:
        futures = {client.submit(_cached, kind, keys[i], fn, tasks[i], key=f"{kind}-{keys[i]}", pure=False): i
                   for i in todo}
        for future in as_completed(futures):
            out[futures[future]] = future.result()
            bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def combine(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """One Dataset from the one-cell results of `run` (cells placed by their coordinates; cache attrs dropped)."""
    return xr.combine_by_coords(list(datasets), join="outer", combine_attrs="drop")
