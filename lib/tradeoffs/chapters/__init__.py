"""The analysis behind each book chapter, one module per notebook (`inverted_u`, `early_stopping`, ...).

A notebook holds its parameters, one or two calls per step into its module, figures and the verdict; what it computes,
the profiles it runs under and the sentences it prints from results live in the module, where tests reach them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from tqdm import TqdmWarning

from ..errors import TradeoffsError

warnings.filterwarnings("ignore", category=TqdmWarning)  # without ipywidgets, progress bars are plain text

ALWAYS = ("device", "seed")  # parameters every notebook has, outside its profiles


def settings(profiles: Mapping[str, Mapping[str, Any]], profile: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """A profile's settings, each overridden by the notebook parameter of the same name when that is not None."""
    if profile not in profiles:
        raise TradeoffsError(f"unknown profile {profile!r}; use one of {', '.join(profiles)}.")
    chosen = dict(profiles[profile])
    for name in (*chosen, *ALWAYS):
        if given.get(name) is not None:
            chosen[name] = given[name]
    return chosen


def full_run_text(claim: str, part: str, subject: str = "It") -> str:
    """Whether `claim` has stored `full` results (its `part` file), as a sentence for the page."""
    from .. import claims, results

    if (results.results_dir() / f"{claims.result_name(claim, part, 'full')}.nc").exists():
        return "Its stored results exist."
    return f"{subject} has not been run here: there are no `full` results."


def elapsed_text(parts: Mapping[str, Any]) -> str:
    """How long the last computation of a page's results took, in all and per results file (their `elapsed_s`)."""
    minutes = {name: float(ds.attrs["elapsed_s"]) / 60 for name, ds in parts.items()}
    first = next(iter(parts.values())).attrs
    return (f"The last computation of this page's results took {sum(minutes.values()):.1f} min ("
            + ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items())
            + f"; profile `{first['profile']}`, read from the results files' `elapsed_s`) on {first['device']}.")


def setup() -> None:
    """What every chapter notebook starts with: the book's figure style, and tables whose cells show their whole
    text (pandas cuts cells at 50 characters by default)."""
    import pandas as pd

    from .. import plots

    plots.set_style()
    pd.set_option("display.max_colwidth", None)


def main_figure(fig: Any) -> None:
    """Keep `fig` as the chapter's main figure: the page shows it again at its top, under the verdict box
    (myst-nb glue `main-figure`, not displayed here)."""
    from myst_nb import glue

    glue("main-figure", fig, display=False)
