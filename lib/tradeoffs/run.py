"""Execute the claim notebooks with papermill: `python -m tradeoffs.run [--profile P] [--only NAME ...]`."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from pathlib import Path

from .claims import PROFILES, run_order
from .errors import TradeoffsError
from .provenance import commit
from .results import repo_root
from .store import compare, load, stored_names

# Execution order: claims whose results other notebooks read come first (tradeoffs.claims.run_order); the scorecard,
# which compares a model with every claim's stored results, comes last.
ORDER = (*run_order(), "performance", "score_model")


def notebooks(source: Path) -> list[str]:
    """Notebook names under `source`, claims in the book's order first."""
    found = {p.stem for p in source.glob("*.ipynb")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def select(available: list[str], only: list[str] | None) -> list[str]:
    """The notebooks to run; unknown names are refused with close matches."""
    if not only:
        return available
    for name in only:
        if name not in available:
            close = difflib.get_close_matches(name, available, n=3) or available
            raise TradeoffsError(f"unknown notebook {name!r}: did you mean {', '.join(close)}?")
    return [n for n in available if n in only]


def execute(name: str, source: Path, output: Path, profile: str, cwd: Path, extra: dict | None = None) -> float:
    """Run one notebook; returns seconds. A failing cell raises TradeoffsError with its execution count and error."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(source / f"{name}.ipynb", output / f"{name}.ipynb", parameters={"profile": profile, **(extra or {})},
                            cwd=str(cwd), kernel_name="python3", progress_bar=sys.stderr.isatty(), log_output=False)
    except PapermillExecutionError as exc:
        first = str(exc.evalue).strip().splitlines()[0] if str(exc.evalue).strip() else ""
        raise TradeoffsError(f"{name} failed in cell {exc.exec_count}: {exc.ename}: {first} "
                             f"(see {output / (name + '.ipynb')})") from None
    return time.perf_counter() - start


def reproduce_report(stored_dir: Path, fresh_dir: Path) -> list[str]:
    """One line per stored results file: reproduced within tolerance, or what differs."""
    lines = []
    for name in stored_names(fresh_dir):
        if not (stored_dir / f"{name}.nc").exists():
            lines.append(f"{name}: new (nothing stored to compare with)")
            continue
        problems = compare(load(name, stored_dir), load(name, fresh_dir))
        lines.append(f"{name}: reproduced within tolerance" if not problems else f"{name}: DIFFERS: " + "; ".join(problems))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tradeoffs.run", description=__doc__)
    parser.add_argument("--profile", default="default", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    parser.add_argument("--output-dir", type=Path, help="where executed notebooks go (default book/executed)")
    parser.add_argument("--reproduce", action="store_true",
                        help="recompute everything from scratch (an empty cache) into _build/reproduce and compare with "
                             "data/results")
    args = parser.parse_args(argv)
    try:
        if args.profile not in PROFILES:
            raise TradeoffsError(f"unknown profile {args.profile!r}: use one of {', '.join(PROFILES)}")
        root = repo_root()
        if root is None:
            raise TradeoffsError("run this from the project checkout (the folder with _config.yml and notebooks/)")
        names = select(notebooks(root / "notebooks"), args.only)
        output = args.output_dir or root / "book" / "executed"
        if args.reproduce:
            fresh = root / "_build" / "reproduce" / "results"
            fresh.mkdir(parents=True, exist_ok=True)
            cache = root / "_build" / "reproduce" / "cache"  # an empty cache: no training run or feature is reused
            os.environ.update(TRADEOFFS_RECOMPUTE="1", TRADEOFFS_RESULTS=str(fresh), TRADEOFFS_CACHE=str(cache))
            output = root / "_build" / "reproduce" / "executed"
        pinned = {"ref": head} if (head := commit()) else None  # the Colab cell installs the package at this commit
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} (profile {args.profile}) ...", flush=True)
            seconds = execute(name, root / "notebooks", output, args.profile, root, pinned)
            print(f"[{i}/{len(names)}] {name} done in {seconds:.0f} s -> {output / (name + '.ipynb')}", flush=True)
        if args.reproduce:
            report = reproduce_report(root / "data" / "results", fresh)
            print("\n".join(report) or "no results files were written")
            return int(any("DIFFERS" in line for line in report))
    except TradeoffsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
