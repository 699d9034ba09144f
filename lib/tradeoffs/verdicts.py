"""Outcomes of the declared tests (`tradeoffs.claims`), stored beside each claim's results.

A notebook measures; this module judges. For every declared test: a gate that fails gives **not testable here**
(with the measured value); a test the profile does not run gives **not run in this profile**; an interval that is
undefined or collapsed gives **inconclusive here**; otherwise `stats.verdict` decides. Where the paper gives the same
statistic, a second line says whether its value lies inside our CI. The claim's verdict is its primary test's
outcome; secondary tests carry Holm-adjusted p values and never vote. A secondary test with a p value is judged
after that adjustment: its interval decides only if its Holm p is below `ALPHA`, else it is inconclusive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import claims, stats
from .errors import TradeoffsError
from .store import load, save

NOT_TESTABLE = "not testable here"
NOT_RUN = "not run in this profile"
INCONCLUSIVE = "inconclusive here"
ALPHA = 0.05  # the level of the 95% intervals, and of the Holm-adjusted p values of the secondary tests


@dataclass(frozen=True)
class Measured:
    """What a notebook measured for one declared test: the estimate, its 95% CI, and each gate's measured value."""

    estimate: float
    ci_low: float
    ci_high: float
    n: int
    p: float = math.nan
    ci_method: str = ""
    gates: Mapping[str, float] = field(default_factory=dict)
    note: str = ""

    @classmethod
    def of(cls, result: Mapping[str, Any], gates: Mapping[str, float] | None = None, note: str = "") -> Measured:
        """From a `tradeoffs.stats` result dict (`estimate` or `r`, ci_low, ci_high, n, p, ci_method)."""
        estimate = result["estimate"] if "estimate" in result else result["r"]
        return cls(float(estimate), float(result["ci_low"]), float(result["ci_high"]), int(result["n"]),
                   float(result.get("p", math.nan)), str(result.get("ci_method", "")), dict(gates or {}), note)


def outcome(spec: claims.TestSpec, m: Measured | None, profile: str) -> str:
    """The outcome of one declared test: gates first, then the interval."""
    if m is None:
        return NOT_RUN if profile not in spec.profiles else NOT_TESTABLE
    missing = [g.id for g in spec.gates if g.id not in m.gates]
    if missing:
        raise TradeoffsError(f"test {spec.id!r}: no measured value for gate(s) {', '.join(missing)}")
    if not all(g.passes(m.gates[g.id]) for g in spec.gates):
        return NOT_TESTABLE
    lo, hi = m.ci_low, m.ci_high
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 0 or m.n <= 3:
        return INCONCLUSIVE
    return stats.verdict(lo, hi, spec.expected_sign)


def consistency(spec: claims.TestSpec, m: Measured | None) -> str:
    """Where the paper gives the same statistic: is its value inside our CI?"""
    if not math.isfinite(spec.paper_effect):
        return ""
    if m is None or not (math.isfinite(m.ci_low) and math.isfinite(m.ci_high)):
        return "no interval to compare with the paper's value"
    value = f"{spec.paper_effect:g}"
    if m.ci_low <= spec.paper_effect <= m.ci_high:
        return f"consistent with the paper's {value}"
    if m.ci_high < spec.paper_effect:
        return f"smaller than the paper's {value} (our CI ends at {m.ci_high:.3f})"
    return f"larger than the paper's {value} (our CI starts at {m.ci_low:.3f})"


def evaluate(claim_id: str, measured: Mapping[str, Measured | None], profile: str) -> xr.Dataset:
    """Every declared test of a claim, judged, as a Dataset with dims (test, gate).

    `measured` maps test ids to what was measured; ids the claim does not declare are refused (a test must be
    declared before it runs), declared ids that are absent are stored as not run / not testable.
    """
    claim = claims.claim(claim_id)
    unknown = set(measured) - {t.id for t in claim.tests}
    if unknown:
        raise TradeoffsError(f"{claim_id}: tests {sorted(unknown)} are not declared in tradeoffs.claims; declare "
                             "them there first.")
    primary = claim.primary(profile).id
    gate_ids = list(dict.fromkeys(g.id for t in claim.tests for g in t.gates))
    rows, gm, gt, gp, gd, gr = [], [], [], [], [], []
    for spec in claim.tests:
        m = measured.get(spec.id)
        result = outcome(spec, m, profile)
        rows.append({"test": spec.id, "name": spec.name, "statistic": spec.statistic,
                     "estimate": m.estimate if m else math.nan, "ci_low": m.ci_low if m else math.nan,
                     "ci_high": m.ci_high if m else math.nan, "n": m.n if m else 0, "p": m.p if m else math.nan,
                     "ci_method": m.ci_method if m else "", "note": m.note if m else "",
                     "expected_sign": spec.expected_sign, "setting": spec.setting, "difference": spec.difference,
                     "construct": spec.construct, "shared": spec.shared, "declared": spec.declared,
                     "paper_effect": spec.paper_effect,
                     "paper_source": spec.paper_source,
                     "consistency": consistency(spec, m) if result != NOT_TESTABLE else "",
                     "primary": spec.id == primary, "outcome": result})
        by_id = {g.id: g for g in spec.gates}
        gm.append([float(m.gates[g]) if m and g in by_id else math.nan for g in gate_ids])
        gt.append([by_id[g].threshold if g in by_id else math.nan for g in gate_ids])
        gp.append([float(by_id[g].passes(m.gates[g])) if m and g in by_id else math.nan for g in gate_ids])
        gd.append([by_id[g].description if g in by_id else "" for g in gate_ids])
        gr.append([by_id[g].remedy if g in by_id else "" for g in gate_ids])
    table = pd.DataFrame(rows).set_index("test")
    secondary = ~table["primary"] & table["outcome"].isin(["supported", "not supported", INCONCLUSIVE])
    table["p_holm"] = math.nan
    table.loc[secondary, "p_holm"] = stats.holm(table.loc[secondary, "p"].to_numpy(float))
    table.loc[secondary & (table["p_holm"] >= ALPHA), "outcome"] = INCONCLUSIVE  # not after Holm
    ds = xr.Dataset({c: ("test", table[c].to_numpy()) for c in table.columns}, coords={"test": table.index.to_numpy()})
    ds = ds.assign(gate_measured=(("test", "gate"), np.array(gm).reshape(len(rows), len(gate_ids))),
                   gate_threshold=(("test", "gate"), np.array(gt).reshape(len(rows), len(gate_ids))),
                   gate_passed=(("test", "gate"), np.array(gp).reshape(len(rows), len(gate_ids))),
                   gate_description=(("test", "gate"), np.array(gd, dtype=str).reshape(len(rows), len(gate_ids))),
                   gate_remedy=(("test", "gate"), np.array(gr, dtype=str).reshape(len(rows), len(gate_ids))))
    ds = ds.assign_coords(gate=gate_ids)
    ds.attrs.update(claim=claim_id, claim_text=claim.text, primary_test=primary,
                    verdict=str(table.loc[primary, "outcome"]), profile_judged=profile,
                    paper_numbers=json.dumps(claim.paper_numbers), untested=json.dumps(claim.untested),
                    history=claim.history)
    return ds


def record(claim_id: str, measured: Mapping[str, Measured | None], *, profile: str,
           parameters: dict[str, Any], inputs: list[xr.Dataset] = (),
           tolerance: dict[str, Any] | None = None) -> xr.Dataset:
    """Judge and store `<claim>_verdict_<profile>.nc`; returns it.

    `inputs` are the results files the verdict summarises: their creation times are recorded, and a stored file with
    the same rows is kept as it is only if it is not older than any of them. `tolerance` is what `make reproduce`
    allows (default: numbers within 1e-3; `{"outcomes_only": True}` where the inputs are not bit-reproducible).
    """
    ds = evaluate(claim_id, measured, profile)
    ds.attrs["inputs_created"] = json.dumps(sorted(str(i.attrs.get("created_utc", "")) for i in inputs))
    name = claims.result_name(claim_id, "verdict", profile)
    try:
        stored = load(name)
    except TradeoffsError:
        stored = None
    newest_input = max([str(i.attrs.get("created_utc", "")) for i in inputs], default="")
    fresh = stored is not None and str(stored.attrs.get("created_utc", "")) >= newest_input
    if not (fresh and _same(stored, ds)):
        save(ds, name, profile=profile, parameters=parameters, elapsed_s=0.0,
             tolerance=tolerance or {"rtol": 1e-3, "atol": 1e-3})
    return load(name)


def _same(a: xr.Dataset, b: xr.Dataset) -> bool:
    keep = ("claim", "claim_text", "primary_test", "verdict", "profile_judged", "paper_numbers", "untested", "history",
            "inputs_created")
    return a.drop_attrs().equals(b.drop_attrs()) and all(str(a.attrs.get(k)) == str(b.attrs.get(k)) for k in keep)


def gates_of(ds: xr.Dataset, test: str) -> list[dict[str, Any]]:
    """The gates one stored test declares: description, measured value, threshold, passed."""
    row = ds.sel(test=test)
    return [{"gate": str(g), "description": str(row.gate_description.sel(gate=g).item()),
             "remedy": str(row.gate_remedy.sel(gate=g).item()),
             "measured": float(row.gate_measured.sel(gate=g)), "threshold": float(row.gate_threshold.sel(gate=g)),
             "passed": bool(row.gate_passed.sel(gate=g))}
            for g in ds.gate.values if np.isfinite(float(row.gate_threshold.sel(gate=g)))]


def table(profile: str = "default") -> pd.DataFrame:
    """One row per claim from the stored verdict files (claims not yet run say so)."""
    rows = []
    for claim_id, claim in claims.CLAIMS.items():
        try:
            ds = load(claims.result_name(claim_id, "verdict", profile))
        except TradeoffsError:
            rows.append({"claim": claim_id, "claim_text": claim.text, "primary": "", "verdict": "not yet run"})
            continue
        rows.append({"claim": claim_id, "claim_text": claim.text, "primary": ds.attrs["primary_test"],
                     "verdict": ds.attrs["verdict"]})
    return pd.DataFrame(rows)


def interval_text(row: xr.Dataset | pd.Series) -> str:
    """`+est [+low, +high], n = N` with three significant digits (a bound never rounds to zero), or why there is
    none; the one format of a stored test's estimate on every page."""
    est, lo, hi = (float(row[k]) for k in ("estimate", "ci_low", "ci_high"))
    if not math.isfinite(est):
        return "not measured"
    ci = f"[{lo:+.3g}, {hi:+.3g}]" if math.isfinite(lo) and math.isfinite(hi) else "(no interval)"
    return f"{est:+.3g} {ci}, n = {int(row['n'])}"


def _value(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "not available"


def p_text(p: float) -> str:
    """A p value as pages print it: `< 0.0001` or two significant digits."""
    return "< 0.0001" if p < 1e-4 else f"{p:.2g}"


def _p(p: float) -> str:
    text = p_text(p)
    return text if text.startswith("<") else f"= {text}"


def _excludes_zero(row: xr.Dataset | pd.Series) -> bool:
    lo, hi = float(row["ci_low"]), float(row["ci_high"])
    return math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def declared_when(row: xr.Dataset | pd.Series, history: str = "") -> str:
    """When the primary test was fixed: before the results, after earlier results (the claim has a `history`), or
    (said plainly) when and why it was made primary after its own results were seen."""
    declared = row["declared"] if "declared" in row else ""
    declared = str(declared.item() if isinstance(declared, xr.DataArray) else declared)
    if declared:
        return f"re-declared after the results were seen: {declared}"
    if history:
        return "declared in `tradeoffs.claims` after earlier results of this claim had been seen; history below"
    return "fixed in `tradeoffs.claims` before the results"


def gate_text(g: dict[str, Any]) -> str:
    """A gate of `gates_of` in words: what it checks (with its threshold), the measured value, passes or fails."""
    verdict = "passes" if g["passed"] else f"fails; needs {g['remedy']}" if g["remedy"] else "fails"
    return f"{g['description']}: measured {_value(g['measured'])} ({verdict})"


def failed_gate_text(g: dict[str, Any]) -> str:
    """A failed gate in short: what it checks, the measured value and the threshold it missed."""
    what = g["description"].split(" (")[0]
    if not math.isfinite(g["measured"]):
        return f"{what}: not measurable"
    side = "≥" if g["measured"] < g["threshold"] else "≤"
    needs = "> 0" if side == "≥" and 0 < g["threshold"] < 1e-6 else f"{side} {_value(g['threshold'])}"
    return f"{what}: {_value(g['measured'])} (needs {needs})"


def markdown(ds: xr.Dataset, *, secondary: bool = True) -> str:
    """The verdict box of a claim page: the primary test's outcome with its gates, then the secondary tests."""
    primary = ds.attrs["primary_test"]
    row = ds.sel(test=primary)
    history = str(ds.attrs.get("history", ""))
    head = [f"**Verdict: {ds.attrs['verdict']}** (primary test, {declared_when(row, history)}: "
             f"*{row['name'].item()}*). {_sentence(row['statistic'].item())}: {interval_text(row)}"
             + (f"; {row['consistency'].item()}" if row["consistency"].item() else "") + "."]
    gates = gates_of(ds, primary)
    if gates:
        head.append("Validity gates: " + "; ".join(gate_text(g) for g in gates) + ".")
    if row["difference"].item():
        head.append(f"Setting: {row['setting'].item()}: {row['difference'].item()}. Measure: "
                    f"{row['construct'].item()}." + (f" The same measure serves another claim: {row['shared'].item()}."
                                                     if row["shared"].item() else ""))
    if history:
        head.append(f"History: {history}")
    if not secondary or len(ds.test) == 1:
        return "\n\n".join(head)
    lines = ["Secondary evidence (listed, never voted; p adjusted by Holm over these rows):"]
    for t in ds.test.values:
        if t == primary:
            continue
        r = ds.sel(test=t)
        failed = [failed_gate_text(g) for g in gates_of(ds, str(t)) if not g["passed"]]
        extra = f" — gate failed: {'; '.join(failed)}" if failed and r["outcome"].item() == NOT_TESTABLE else ""
        p = float(r["p_holm"])
        if r["outcome"].item() == INCONCLUSIVE and p >= ALPHA and _excludes_zero(r):
            extra = " (its unadjusted interval excludes 0, its Holm-adjusted p does not reach 0.05)"
        lines.append(f"- *{r['name'].item()}*: {interval_text(r)}"
                     + (f", Holm p {_p(p)}" if math.isfinite(p) else "")
                     + (f"; {r['consistency'].item()}" if r["consistency"].item() else "")
                     + f" → **{r['outcome'].item()}**{extra}.")
    return "\n\n".join(head) + "\n\n" + "\n".join(lines)


def show(ds: xr.Dataset) -> None:
    """Display the verdict box; in the book build also glue its short form as `verdict`, which opens the page."""
    from IPython.display import Markdown, display

    try:
        from myst_nb import glue
    except ImportError:  # outside the book build (on Colab, say) nothing reads the glued copy
        pass
    else:
        glue("verdict", Markdown(markdown(ds, secondary=False)), display=False)
    display(Markdown(markdown(ds)))
