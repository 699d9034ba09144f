"""Verdict rows: the rule decides, the file round-trips, and an unrun claim says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradeoffs import verdicts
from tradeoffs.errors import TradeoffsError


def _test(lo: float, hi: float, sign: int = -1) -> verdicts.Test:
    return verdicts.Test(name="rho", statistic="Spearman rho", estimate=(lo + hi) / 2, ci_low=lo, ci_high=hi,
                         expected_sign=sign, n=10, setting="offline proxy", paper="rho = -0.65 (test)")


def test_rule_follows_the_ci() -> None:
    assert _test(-0.8, -0.2).verdict == "supported"
    assert _test(0.2, 0.8).verdict == "not supported"
    assert _test(-0.5, 0.3).verdict == "inconclusive here"
    assert _test(0.2, 0.8, sign=+1).verdict == "supported"


def test_record_and_table(isolated: Path) -> None:
    verdicts.record("human_alignment", [_test(-0.8, -0.2)], profile="smoke", parameters={"x": 1})
    table = verdicts.table("smoke").set_index("claim")
    assert table.loc["human_alignment", "verdict"] == "supported"
    assert "-0.50 [-0.80, -0.20]" in table.loc["human_alignment", "result"]
    assert table.loc["inverted_u", "verdict"] == "not yet run"
    assert verdicts.overall(["supported", "not supported"]) == "mixed: not supported, supported"


def test_refuses_unknown_claim_and_empty_rows() -> None:
    with pytest.raises(TradeoffsError, match="unknown claim"):
        verdicts.to_dataset("flat_earth", [_test(-1, 1)])
    with pytest.raises(TradeoffsError, match="no tests"):
        verdicts.to_dataset("inverted_u", [])


def test_unchanged_rows_keep_the_stored_file(isolated: Path) -> None:
    path = isolated / "results" / "inverted_u_verdict_smoke.nc"
    verdicts.record("inverted_u", [_test(-0.8, -0.2), _test(float("nan"), float("nan"))], profile="smoke",
                    parameters={})
    before = path.stat().st_mtime_ns, path.read_bytes()
    verdicts.record("inverted_u", [_test(-0.8, -0.2), _test(float("nan"), float("nan"))], profile="smoke",
                    parameters={})
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before, "identical rows rewrote the file"
    changed = verdicts.record("inverted_u", [_test(-0.8, -0.1)], profile="smoke", parameters={})
    assert float(changed.ci_high.item()) == -0.1 and path.read_bytes() != before[1]
