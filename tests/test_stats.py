"""Statistics: correlations and their CIs, quadratic vertex, permutation tests, the verdict rule."""

import numpy as np
import pytest
from scipy.stats import kendalltau, norm, pearsonr, spearmanr

from tradeoffs import stats as S
from tradeoffs.errors import TradeoffsError


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    return x, 0.5 * x + rng.normal(size=40)


# ------------------------------------------------------------------ correlations

def test_correlation_pearson_with_unrounded_fisher_ci(xy):
    x, y = xy
    res = S.correlation(x, y)
    r, p = pearsonr(x, y)
    half = norm.ppf(0.975) / np.sqrt(len(x) - 3)
    assert res["r"] == pytest.approx(r) and res["p"] == pytest.approx(p) and res["n"] == 40
    assert res["ci_low"] == pytest.approx(np.tanh(np.arctanh(r) - half), abs=1e-9)  # pingouin's CI95 column is
    assert res["ci_high"] == pytest.approx(np.tanh(np.arctanh(r) + half), abs=1e-9)  # rounded to 2 decimals


def test_correlation_spearman_and_kendall(xy):
    x, y = xy
    assert S.correlation(x, y, "spearman")["r"] == pytest.approx(spearmanr(x, y).statistic)
    res = S.correlation(x, y, "kendall")
    assert res["r"] == pytest.approx(kendalltau(x, y).statistic) and res["ci_method"] == "Fieller z"
    assert res["ci_low"] < res["r"] < res["ci_high"]
    with pytest.raises(TradeoffsError, match="spearman"):
        S.correlation(x, y, "spearmann")


def test_correlation_refuses_bad_input():
    with pytest.raises(TradeoffsError, match="one length"):
        S.correlation([1, 2, 3], [1, 2])
    with pytest.raises(TradeoffsError, match="NaN"):
        S.correlation([1, 2, np.nan, 4], [1, 2, 3, 4])
    with pytest.raises(TradeoffsError, match="at least 3"):
        S.correlation([1, 2], [1, 2])


def test_rowwise_kendall_equals_scipy_tau_b_with_ties():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, (30, 12)).astype(float), rng.integers(0, 3, (30, 12)).astype(float)
    expected = [kendalltau(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(S._rowwise_corr(x, y, "kendall"), expected)


def test_correlation_beyond():
    x = np.linspace(0, 10, 41)
    y = np.where(x <= 6, x, 12 - x) + np.random.default_rng(2).normal(0, 0.3, 41)
    res = S.correlation_beyond(x, y, threshold=6)
    assert list(res.index) == ["below", "above"] and res.loc["below", "n"] == 25 and res.loc["above", "n"] == 16
    assert res.loc["below", "ci_low"] > 0 and res.loc["above", "ci_high"] < 0


# ------------------------------------------------------------------ quadratic vertex

def test_quadratic_fit_recovers_a_known_vertex():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 60)
    y = -0.5 * (x - 6.0) ** 2 + 3 + rng.normal(0, 1.0, 60)
    res = S.quadratic_fit(x, y)
    np.testing.assert_allclose([res["a"], res["b"], res["c"]], np.polyfit(x, y, 2), rtol=1e-8)
    assert res["vertex_ci"][0] < 6.0 < res["vertex_ci"][1] and res["vertex_ci"][1] - res["vertex_ci"][0] < 1.0
    assert res["concave"] and res["concave_fraction"] == 1.0 and res["vertex_in_range"]
    assert res["p_quadratic"] < 1e-10 and res["r2"] > 0.8 and res["n"] == 60


def test_quadratic_fit_on_a_line_has_a_wide_vertex_ci():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 30)
    res = S.quadratic_fit(x, 2 * x + rng.normal(0, 1.0, 30))
    lo, hi = res["vertex_ci"]
    assert hi - lo > 100  # far wider than the data range 0..10
    assert 0.02 < res["concave_fraction"] < 0.98 and res["p_quadratic"] > 0.05


def test_quadratic_fit_is_affine_equivariant_in_x():
    rng = np.random.default_rng(2)
    x = rng.uniform(70, 85, 25)  # e.g. top-1 accuracies in %
    y = -(x - 78) ** 2 + rng.normal(0, 3, 25)
    a, b = S.quadratic_fit(x, y), S.quadratic_fit(x / 100, y)
    assert b["vertex_x"] == pytest.approx(a["vertex_x"] / 100)
    np.testing.assert_allclose(b["vertex_ci"], np.array(a["vertex_ci"]) / 100)
    assert b["p_quadratic"] == pytest.approx(a["p_quadratic"])


def test_quadratic_fit_refuses_too_few_distinct_x():
    with pytest.raises(TradeoffsError, match="distinct"):
        S.quadratic_fit([1, 1, 2, 2], [1, 2, 3, 4])


# ------------------------------------------------------------------ the verdict rule

@pytest.mark.parametrize("lo, hi, sign, expected", [
    (0.1, 0.5, 1, "supported"),
    (-0.5, -0.1, 1, "not supported"),
    (-0.1, 0.5, 1, "inconclusive here"),
    (0.0, 0.5, 1, "inconclusive here"),  # touching 0 does not exclude it
    (-0.5, -0.1, -1, "supported"),
    (0.1, 0.5, -1, "not supported"),
    (-0.5, 0.0, -1, "inconclusive here"),
    (np.nan, 0.5, 1, "inconclusive here"),
])
def test_verdict(lo, hi, sign, expected):
    assert S.verdict(lo, hi, sign) == expected


def test_verdict_refuses():
    with pytest.raises(TradeoffsError, match="expected_sign"):
        S.verdict(0.1, 0.2, 0)
    with pytest.raises(TradeoffsError, match="in order"):
        S.verdict(0.3, 0.2, 1)


# ------------------------------------------------------------------ intervals that cover, p values that are calibrated

def test_spearman_ci_uses_the_bonett_wright_se():
    res = S.correlation(np.arange(11.0), np.array([1, 3, 2, 5, 4, 6, 8, 7, 9, 11, 10.0]), "spearman")
    r = spearmanr(np.arange(11.0), [1, 3, 2, 5, 4, 6, 8, 7, 9, 11, 10.0]).statistic
    half = norm.ppf(0.975) * np.sqrt((1 + r ** 2 / 2) / 8)
    assert res["ci_low"] == pytest.approx(np.tanh(np.arctanh(r) - half))
    assert res["ci_high"] == pytest.approx(np.tanh(np.arctanh(r) + half))


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_perfect_and_constant_correlations_have_no_interval(method):
    perfect = S.correlation([1, 2, 3], [2, 4, 9], method)
    assert np.isnan(perfect["ci_low"]) and np.isnan(perfect["ci_high"])
    assert S.verdict(perfect["ci_low"], perfect["ci_high"], 1) == "inconclusive here"
    assert np.isnan(S.correlation([1, 2, 3, 4], [5, 5, 5, 5], method)["ci_low"])


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_exact_p_equals_scipy_over_every_permutation(method):
    from scipy.stats import permutation_test

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=7), rng.normal(size=7)
    stat = {"pearson": lambda a: abs(pearsonr(x, a).statistic), "spearman": lambda a: abs(spearmanr(x, a).statistic),
            "kendall": lambda a: abs(kendalltau(x, a).statistic)}[method]  # two-sided: P(|r_perm| >= |r_obs|)
    ref = permutation_test((y,), stat, permutation_type="pairings", n_resamples=np.inf,
                           alternative="greater").pvalue
    assert S.exact_permutation_p(x, y, method) == pytest.approx(ref)
    assert S.correlation(x, y, method)["p"] == pytest.approx(ref)


def test_holm_matches_statsmodels_and_skips_nan():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, np.nan, 0.04, 0.03]
    out = S.holm(p)
    assert np.isnan(out[1]) and out[[0, 2, 3]] == pytest.approx(multipletests([0.01, 0.04, 0.03], method="holm")[1])


def _coverage(draw, truth: float, interval, reps: int) -> float:
    hits = 0
    for seed in range(reps):
        lo, hi = interval(*draw(np.random.default_rng(seed)))
        hits += lo <= truth <= hi
    return hits / reps


@pytest.mark.parametrize("n", [10, 30])
@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_correlation_ci_covers(n, method):
    rho = 0.5
    cov = np.array([[1, rho], [rho, 1]])
    truth = rho if method == "pearson" else 6 / np.pi * np.arcsin(rho / 2)  # Spearman's rho of a bivariate normal
    cover = _coverage(lambda rng: rng.multivariate_normal([0, 0], cov, n).T, truth,
                      lambda x, y: S.correlation_ci((pearsonr if method == "pearson" else spearmanr)(x, y).statistic,
                                                    n, method),
                      reps=400 if n == 10 else 300)
    assert cover >= 0.93, f"{method} CI covers {cover:.3f} at n = {n}"


@pytest.mark.parametrize("n", [10, 30])
def test_bca_bootstrap_covers_a_mean_and_a_correlation_difference(n):
    def mean_ci(values):
        r = S.bootstrap(lambda idx: values[idx].mean(1), len(values), n_boot=1000)
        return r["ci_low"], r["ci_high"]

    cover = _coverage(lambda rng: (rng.exponential(size=n),), 1.0, mean_ci, reps=500)
    assert cover >= 0.93, f"BCa covers the mean of a skewed sample {cover:.3f} at n = {n}"

    def diff_ci(t, a, b):
        r = S.corr_diff(t, a, b, method="pearson", n_boot=1000)
        return r["ci_low"], r["ci_high"]

    def draw(rng):
        t = rng.normal(size=n)
        return t, 0.8 * t + 0.6 * rng.normal(size=n), 0.4 * t + np.sqrt(0.84) * rng.normal(size=n)

    cover = _coverage(draw, 0.4, diff_ci, reps=500)
    assert cover >= 0.93, f"BCa covers a difference of correlations {cover:.3f} at n = {n}"


def test_cluster_bootstrap_is_wider_than_pretending_cells_are_independent():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(8), 5)
    values = rng.normal(size=8)[clusters] + 0.1 * rng.normal(size=40)
    clustered = S.cluster_mean(values, clusters)
    naive = S.mean_ci(values)
    assert clustered["n"] == 8 and clustered["n_cells"] == 40
    assert clustered["ci_high"] - clustered["ci_low"] > 2 * (naive["ci_high"] - naive["ci_low"])


def test_permutation_p_values_are_calibrated():
    rng = np.random.default_rng(0)
    exact = [S.exact_permutation_p(rng.normal(size=7), rng.normal(size=7)) for _ in range(400)]
    assert 0.02 <= np.mean(np.array(exact) < 0.05) <= 0.08
    flip = [S.paired_difference(rng.normal(size=12), rng.normal(size=12), n_boot=200, n_perm=500, seed=i)["p"]
            for i in range(300)]
    assert 0.02 <= np.mean(np.array(flip) < 0.05) <= 0.08


def test_mean_ci_and_held_out_gain():
    assert np.isnan(S.mean_ci([2, 2, 2])["ci_low"]) and np.isnan(S.mean_ci([1.0])["ci_high"])
    t = S.mean_ci([1.0, 2.0, 3.0])
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)), rel=1e-5)
    acc = np.tile(np.linspace(0, 1, 6)[None, :, None], (4, 1, 2))  # accuracy peaks at the last epoch
    early = np.tile(np.array([0, 1, 5, 1, 0, 0.0])[None, :, None], (4, 1, 2))  # the measure peaks at epoch 2
    assert S.held_out_gain(early, acc) == pytest.approx([5, 5, 5, 5])
    noisy = np.random.default_rng(0).normal(size=(400, 6, 2))
    assert abs(S.held_out_gain(noisy, np.tile(acc[:1], (400, 1, 1))).mean()) < 0.1, "noise on a flat curve gives no held-out gain"
    assert S.late_change(np.array([[0.1, 0.5, 0.60, 0.61, 0.6, 0.605]]), last=4) < 0.005, "noise is not change"
    assert S.late_change(np.array([[0.0, 0.1, 0.2, 0.3, 0.4], [0.5] * 5]), last=5) == pytest.approx(0.4)


def test_epoch_lead_counts_epochs_before_the_most_accurate_one():
    acc = np.tile(np.linspace(0, 1, 6)[None, :, None], (4, 1, 2))  # accuracy peaks at epoch 5
    early = np.tile(np.array([0, 1, 5, 1, 0, 0.0])[None, :, None], (4, 1, 2))  # the measure peaks at epoch 2
    assert S.epoch_lead(early, acc) == pytest.approx([3, 3, 3, 3])
    assert S.epoch_lead(acc, acc) == pytest.approx([0, 0, 0, 0])
    halves = early.copy()
    halves[:, :, 1] = acc[:, :, 1]  # one half peaks at 2, the other with accuracy: the run's lead is the mean
    assert S.epoch_lead(halves, acc) == pytest.approx([1.5] * 4)
    with pytest.raises(TradeoffsError, match=r"\[runs, epochs, 2\]"):
        S.epoch_lead(acc[..., 0], acc[..., 0])


def test_no_later_gain_keeps_its_error_rate_where_the_epoch_lead_does_not():
    """Coverage by simulation, six runs per experiment: accuracy rises until the last epoch while the measure is flat
    (no early peak), both with the binomial noise of 1,000 test images per half. The held-out gain of the best epoch
    no later than the most accurate one keeps the t-interval's 5% error rate; the epoch lead, the blind spot the
    early-stopping page names, calls the flat measure 'earlier' far more often."""
    rng = np.random.default_rng(1)
    rising = 0.8 - 0.6 * np.exp(-np.arange(31) / 12)  # still rising at the end, as under a learning rate decaying to 0
    sd = np.sqrt(0.8 * 0.2 / 1000)
    gain_hits, lead_hits = [], []
    for _ in range(1000):
        acc = rising[None, :, None] + rng.normal(0, sd, (6, 31, 2))
        flat = 0.5 + rng.normal(0, sd, (6, 31, 2))
        ci = S.mean_ci(S.held_out_gain(flat, acc, no_later=True))
        gain_hits.append(np.isfinite(ci["ci_low"]) and (ci["ci_low"] > 0 or ci["ci_high"] < 0))
        lead = S.mean_ci(S.epoch_lead(flat, acc))
        lead_hits.append(lead["ci_low"] > 0)
    assert np.mean(gain_hits) <= 0.08
    assert np.mean(lead_hits) > 0.5


def test_no_later_gain_finds_an_early_peak_and_ignores_a_late_one():
    acc = np.tile(np.linspace(0, 1, 6)[None, :, None], (4, 1, 2))  # accuracy peaks at epoch 5
    early = np.tile(np.array([0, 1, 5, 1, 0, 0.0])[None, :, None], (4, 1, 2))
    assert S.held_out_gain(early, acc, no_later=True) == pytest.approx([5] * 4)
    acc_mid = np.tile(np.array([0, 1, 2, 3, 2, 1.0])[None, :, None], (4, 1, 2))  # accuracy peaks at epoch 3
    late = np.tile(np.array([0, 1, 2, 3, 4, 5.0])[None, :, None], (4, 1, 2))  # the measure keeps improving
    assert S.held_out_gain(late, acc_mid, no_later=True) == pytest.approx([0] * 4)
    assert S.held_out_gain(late, acc_mid) == pytest.approx([2] * 4)


def test_split_optimum_and_slope_at_top():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 80)
    y = -(x - 0.4) ** 2 + 0.02 * rng.normal(size=80)
    split = S.beyond_optimum_split(x, y, seed=1)
    assert 0.3 < split["optimum"] < 0.5 and split["r"] < -0.8 and split["n"] > 10
    assert S.slope_at_top(x, y)["ci_high"] < 0
    assert S.slope_at_top(x, -y)["ci_low"] > 0
    assert S.largest_gap([0.1, 0.4, 0.45]) == pytest.approx(0.3)
    assert S.n_to_detect(0.7) == 10 and S.heterogeneity([0.5, 0.5], [20, 20])["I2"] == 0


def test_slope_at_top_cluster_bootstrap_covers_with_ten_units():
    """Coverage by simulation in the inverted-U setting: 6 training runs (30 checkpoints each, run-level offsets and
    curvatures) and 4 single models above them, 10 units in all; the true slope of the population curve at the top
    must lie inside the BCa interval over units in about 95% of experiments."""
    rng = np.random.default_rng(0)

    def f(x):  # still rising at the top of the sampled range
        return -2 * (x - 0.9) ** 2

    hits = []
    for rep in range(60):
        xs, ys, units = [], [], []
        for r in range(6):
            x = np.linspace(0.2, 0.77, 30) + rng.normal(0, 0.01)
            xs.append(x)
            ys.append(f(x) + rng.normal(0, 0.05) + rng.normal(0, 0.3) * (x - 0.5) ** 2 + rng.normal(0, 0.005, 30))
            units += [f"run {r}"] * 30
        for m in range(4):
            x = rng.uniform(0.8, 0.84)
            xs.append([x])
            ys.append([f(x) + rng.normal(0, 0.05)])
            units.append(f"model {m}")
        x, y = np.concatenate(xs), np.concatenate(ys)
        out = S.slope_at_top(x, y, np.array(units), n_boot=500, seed=rep)
        hits.append(out["ci_low"] <= -4 * (x.max() - 0.9) <= out["ci_high"])
    assert np.mean(hits) >= 0.85


def test_noise_ratio():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.5, 0.9, 200)
    measured = true + rng.normal(0, 0.02, 200)
    pairs = np.column_stack([true[:50] + rng.normal(0, 0.02, 50), true[:50] + rng.normal(0, 0.02, 50)])
    out = S.noise_ratio(measured, n_test=10 ** 9, replicate_pairs=pairs)
    assert out["seed"] == pytest.approx(0.02, rel=0.25) and out["sampling"] < 1e-3
    assert out["reliability"] == pytest.approx(1 - 0.02 ** 2 / np.var(measured, ddof=1), abs=0.02)
    assert S.noise_ratio([0.5, 0.52, 0.48], n_test=50)["reliability"] < 0, "binomial noise dominates"
