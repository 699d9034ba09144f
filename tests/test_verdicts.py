"""Verdicts: gates come first, degenerate intervals never carry a badge, every declared test is stored."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tradeoffs import claims, verdicts
from tradeoffs.errors import TradeoffsError

NAN = math.nan


def m(lo: float, hi: float, n: int = 40, p: float = NAN, **gates: float) -> verdicts.Measured:
    return verdicts.Measured((lo + hi) / 2, lo, hi, n, p, "test", gates)


def outcome(test_id: str, measured: verdicts.Measured | None, claim: str = "dataset_correlation",
            profile: str = "default") -> str:
    return verdicts.outcome(claims.claim(claim).test(test_id), measured, profile)


def test_rule_after_gates() -> None:
    assert outcome("tllib", m(0.3, 0.9, enough_n=10)) == "supported"
    assert outcome("tllib", m(-0.9, -0.3, enough_n=10)) == "not supported"
    assert outcome("tllib", m(-0.3, 0.6, enough_n=10)) == "inconclusive here"
    assert outcome("tllib", m(0.3, 0.9, enough_n=3)) == "not testable here", "a failed gate takes the badge away"
    assert outcome("kl_held_out", m(0.1, 0.2, plateau=5.0), "early_stopping") == "not testable here"
    assert outcome("kl_held_out", m(0.1, 0.2, plateau=0.5), "early_stopping") == "supported"


@pytest.mark.parametrize("interval", [(NAN, NAN), (0.5, 0.5), (1.0, 1.0), (0.2, NAN)])
def test_degenerate_intervals_are_inconclusive(interval: tuple[float, float]) -> None:
    assert outcome("tllib", m(*interval, enough_n=10)) == "inconclusive here"


def test_small_n_is_never_judged() -> None:
    assert outcome("tllib", m(0.3, 0.9, n=3, enough_n=10)) == "inconclusive here"


def test_not_run_and_undeclared() -> None:
    assert outcome("finetune_here", None) == "not run in this profile"
    assert outcome("tllib", None) == "not testable here"
    with pytest.raises(TradeoffsError, match="not declared"):
        verdicts.evaluate("dataset_correlation", {"made_up": m(0.1, 0.2)}, "default")
    with pytest.raises(TradeoffsError, match="no measured value for gate"):
        verdicts.evaluate("dataset_correlation", {"tllib": m(0.1, 0.2)}, "default")


def test_consistency_with_the_paper() -> None:
    spec = claims.claim("dataset_correlation").test("tllib")
    assert verdicts.consistency(spec, m(0.9, 0.99)) == "consistent with the paper's 0.96"
    assert verdicts.consistency(spec, m(0.4, 0.9)) == "smaller than the paper's 0.96 (our CI ends at 0.900)"
    assert verdicts.consistency(claims.claim("dataset_correlation").test("zoo_shifted"), m(0.4, 0.9)) == ""


def test_every_declared_test_is_stored_with_its_gates(isolated: Path) -> None:
    ds = verdicts.record("dataset_correlation", {"tllib": m(0.3, 0.9, n=10, enough_n=10),
                                                 "tllib_mean_r": m(0.2, 0.8, n=10, p=0.01, enough_n=10),
                                                 "zoo_shifted": m(0.8, 0.9, n=1000, p=0.02, enough_n=1000)},
                         profile="smoke", parameters={})
    declared = [t.id for t in claims.claim("dataset_correlation").tests]
    assert list(ds.test.values) == declared
    assert ds.attrs["primary_test"] == "tllib" and ds.attrs["verdict"] == "supported"
    assert bool(ds["primary"].sel(test="tllib")) and int(ds["primary"].sum()) == 1
    assert float(ds["p_holm"].sel(test="tllib_mean_r")) == pytest.approx(0.02)  # Holm over the 2 judged rows
    assert math.isnan(float(ds["p_holm"].sel(test="tllib"))), "the primary test is not adjusted"
    gates = verdicts.gates_of(ds, "probe_cifar_10")
    assert {g["gate"] for g in gates} == {"enough_n", "spread"} and all(math.isnan(g["measured"]) for g in gates)
    assert ds["outcome"].sel(test="finetune_here").item() == "not run in this profile"
    assert "smaller than the paper's 0.96" in ds["consistency"].sel(test="tllib").item()
    assert "Verdict: supported" in verdicts.markdown(ds)


def test_a_secondary_test_is_judged_after_holm(isolated: Path) -> None:
    """An interval that excludes 0 decides a secondary row only if its Holm-adjusted p is below 0.05 too."""
    ds = verdicts.record("dataset_correlation", {"tllib": m(0.3, 0.9, n=10, enough_n=10),
                                                 "tllib_mean_r": m(0.2, 0.8, n=10, p=0.03, enough_n=10),
                                                 "zoo_shifted": m(0.8, 0.9, n=1000, p=0.04, enough_n=1000)},
                         profile="smoke", parameters={})
    assert float(ds["p_holm"].sel(test="tllib_mean_r")) == pytest.approx(0.06)
    assert set(ds["outcome"].sel(test=["tllib_mean_r", "zoo_shifted"]).values) == {"inconclusive here"}
    assert ds.attrs["verdict"] == "supported", "the primary test is not adjusted"
    assert "its Holm-adjusted p does not reach 0.05" in verdicts.markdown(ds)
    ds = verdicts.evaluate("dataset_correlation", {"tllib": m(0.3, 0.9, n=10, enough_n=10),
                                                   "tllib_mean_r": m(0.2, 0.8, n=10, p=0.01, enough_n=10)}, "smoke")
    assert ds["outcome"].sel(test="tllib_mean_r").item() == "supported"


@pytest.mark.parametrize(("values", "text"), [
    ((0.6, 0.0044, 0.88), "+0.6 [+0.0044, +0.88], n = 11"),
    ((-1.5, -2.984, -0.01587), "-1.5 [-2.98, -0.0159], n = 11"),
    ((0.5, NAN, NAN), "+0.5 (no interval), n = 11"),
    ((NAN, NAN, NAN), "not measured")])
def test_interval_text_never_rounds_a_bound_to_zero(values: tuple[float, float, float], text: str) -> None:
    est, lo, hi = values
    assert verdicts.interval_text({"estimate": est, "ci_low": lo, "ci_high": hi, "n": 11}) == text


@pytest.mark.parametrize(("gate", "text"), [
    ({"measured": 1.0, "threshold": 7.0}, "points: 1 (needs ≥ 7)"),
    ({"measured": 0.904, "threshold": 0.5}, "points: 0.904 (needs ≤ 0.5)"),
    ({"measured": -0.02, "threshold": 1e-9}, "points: -0.02 (needs > 0)"),
    ({"measured": NAN, "threshold": 7.0}, "points: not measurable")])
def test_a_failed_gate_shows_its_value_and_threshold(gate: dict, text: str) -> None:
    assert verdicts.failed_gate_text({"description": "points (beyond the optimum)", **gate}) == text


def test_p_text() -> None:
    assert [verdicts.p_text(p) for p in (2e-5, 0.0001, 0.1412, 0.5)] == ["< 0.0001", "0.0001", "0.14", "0.5"]


def test_primary_is_fixed_per_profile() -> None:
    c = claims.claim("inverted_u")
    assert c.primary("full").id == "bapps_beyond" and c.primary("default").id == "cifar10h_beyond"
    for claim in claims.CLAIMS.values():
        ids = [t.id for t in claim.tests]
        assert len(ids) == len(set(ids)), f"{claim.id}: duplicate test ids"
        assert all(t.expected_sign in (1, -1) and t.setting and t.construct for t in claim.tests)


def test_unchanged_rows_keep_the_stored_file(isolated: Path) -> None:
    path = isolated / "results" / "anynetx_subsets_verdict_smoke.nc"
    rows = {"subset_diff": m(0.1, 0.3, above_chance=5, reliable=0.8, architectures=24)}
    verdicts.record("anynetx_subsets", rows, profile="smoke", parameters={})
    before = path.stat().st_mtime_ns, path.read_bytes()
    verdicts.record("anynetx_subsets", rows, profile="smoke", parameters={})
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before, "identical rows rewrote the file"
    changed = verdicts.record("anynetx_subsets", {"subset_diff": m(0.1, 0.4, above_chance=5, reliable=0.8,
                                                                   architectures=24)}, profile="smoke", parameters={})
    assert float(changed.ci_high.sel(test="subset_diff")) == pytest.approx(0.4)


def test_table_reads_the_primary_outcome(isolated: Path) -> None:
    verdicts.record("anynetx_subsets", {"subset_diff": m(0.1, 0.3, above_chance=-1, reliable=0.8, architectures=24)},
                    profile="smoke", parameters={})
    table = verdicts.table("smoke").set_index("claim")
    assert table.loc["anynetx_subsets", "verdict"] == "not testable here"
    assert table.loc["inverted_u", "verdict"] == "not yet run"
