"""Paired tests against golden numbers computed independently (book values, hand formulas,
scipy / statsmodels called along a different route)."""

import itertools
import math

import numpy as np
import pytest
from dspex.pipelines import experiments as ex
from dspex.pipelines.experiments import paired_tests as pt
from scipy import stats

from dspex.errors import ExperimentError


def _table_to_arrays(
    both_pass: int, losses: int, gains: int, both_fail: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example baseline / variant results realising a paired 2x2 table."""
    base = np.array([1] * both_pass + [1] * losses + [0] * gains + [0] * both_fail)
    var = np.array([1] * both_pass + [0] * losses + [1] * gains + [0] * both_fail)
    return base, var


# Cavo et al. (2012) as tabulated in Fagerland, Lydersen & Laake, "Statistical Analysis of
# Contingency Tables", ch. 8: [[59, 6], [16, 80]]. The book's numbers: McNemar exact
# conditional P = 0.052479, asymptotic with CC P = 0.055009, without CC P = 0.033006;
# Tango's score interval for the difference -0.0621 (-0.1240 to -0.0054).
CAVO = (59, 6, 16, 80)


def test_mcnemar_exact_matches_book_value() -> None:
    # rows = "baseline" of the book's first measurement: 6 losses, 16 gains
    base, var = _table_to_arrays(*CAVO)
    res = ex.mcnemar_test(base, var)
    assert (res.gains, res.losses, res.discordant, res.n) == (16, 6, 22, 161)
    assert res.method == "exact-binomial"  # 22 < 25 discordant pairs
    assert res.p_value == pytest.approx(0.052479, abs=5e-7)
    # the same p-value straight from scipy's exact binomial test on the discordant pairs
    assert res.p_value == pytest.approx(stats.binomtest(6, 22, 0.5).pvalue, rel=1e-12)
    assert res.difference == pytest.approx(10 / 161)


def test_mcnemar_switches_to_continuity_corrected_chi2_at_25_discordant() -> None:
    # 10 losses, 15 gains: exactly 25 discordant pairs
    base, var = _table_to_arrays(50, 10, 15, 25)
    res = ex.mcnemar_test(base, var)
    assert res.method == "chi2-continuity"
    stat = (abs(15 - 10) - 1) ** 2 / 25  # hand: (|b - c| - 1)^2 / (b + c)
    assert res.statistic == pytest.approx(stat)
    assert res.p_value == pytest.approx(stats.chi2.sf(stat, 1))
    # one fewer discordant pair: exact again
    base2, var2 = _table_to_arrays(50, 9, 15, 25)
    assert ex.mcnemar_test(base2, var2).method == "exact-binomial"


def test_mcnemar_chi2_book_value_with_correction() -> None:
    # Force the chi-square branch on the book's table to compare with its P = 0.055009.
    base, var = _table_to_arrays(*CAVO)
    res = ex.mcnemar_test(base, var, exact_below=0)
    assert res.p_value == pytest.approx(0.055009, abs=5e-7)


def test_tango_interval_matches_book_value() -> None:
    iv = ex.tango_interval(6, 16, 161)  # gains=6, losses=16 -> estimate -0.0621
    assert iv.low == pytest.approx(-0.1240, abs=5e-5)
    assert iv.high == pytest.approx(-0.0054, abs=5e-5)
    # and mirrored for the variant-vs-baseline orientation used by mcnemar_test
    base, var = _table_to_arrays(*CAVO)
    res = ex.mcnemar_test(base, var)
    assert res.interval.low == pytest.approx(0.0054, abs=5e-5)
    assert res.interval.high == pytest.approx(0.1240, abs=5e-5)


def test_tango_score_is_mcnemar_z_at_zero() -> None:
    assert pt.tango_score(16, 6, 161, 0.0) == pytest.approx((16 - 6) / math.sqrt(22))
    assert pt.tango_score(0, 0, 10, 0.0) == 0.0


def test_tango_interval_edges() -> None:
    all_gain = ex.tango_interval(10, 0, 10)
    assert all_gain.high == 1.0 and 0 < all_gain.low < 1
    all_loss = ex.tango_interval(0, 10, 10)
    assert all_loss.low == -1.0 and -1 < all_loss.high < 0
    none = ex.tango_interval(0, 0, 50)
    assert none.low < 0 < none.high


def test_wilson_interval_matches_hand_formula() -> None:
    for successes, n in [(8, 10), (0, 12), (47, 200), (200, 200)]:
        z = stats.norm.ppf(0.975)
        p = successes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        iv = ex.wilson_interval(successes, n)
        assert iv.low == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert iv.high == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert ex.wilson_interval(8, 10).low == pytest.approx(0.4902, abs=1e-4)  # textbook value


def test_paired_bootstrap_equals_one_sample_bootstrap_of_differences() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=40)
    b = a + rng.normal(0.3, 1.0, size=40)
    res = ex.paired_bootstrap(a, b, seed=7)
    ref = stats.bootstrap(
        (b - a,),
        np.mean,
        method="BCa",
        n_resamples=9999,
        batch=pt.resample_batch(40),  # same draws in the same batches
        rng=np.random.default_rng(7),
    )
    assert res.interval.low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert res.interval.high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert res.difference == pytest.approx(np.mean(b - a))
    assert res.n_resamples == 9999 and res.interval.method == "bootstrap-bca"
    # seeded: the same call gives the same interval
    assert ex.paired_bootstrap(a, b, seed=7) == res


def test_paired_bootstrap_one_sided_and_degenerate() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=30)
    b = a + 0.5 + rng.normal(0, 0.5, size=30)
    one = ex.paired_bootstrap(a, b, alternative="greater", confidence=0.95, seed=1)
    two = ex.paired_bootstrap(a, b, confidence=0.90, seed=1)
    assert one.interval.high == math.inf
    assert one.interval.low == pytest.approx(
        two.interval.low, abs=0.02
    )  # 95% one-sided ~ 90% two-sided
    flat = ex.paired_bootstrap([0.1, 0.2, 0.3], [0.3, 0.4, 0.5])
    assert flat.interval.method == "degenerate"
    assert flat.interval.low == pytest.approx(0.2) and flat.interval.high == pytest.approx(0.2)


def test_paired_permutation_exact_matches_hand_enumeration() -> None:
    a = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])
    b = np.array([0.3, 0.6, 0.2, 1.0, 0.5, 0.8])
    d = b - a
    null = [np.mean(np.array(signs) * d) for signs in itertools.product([-1, 1], repeat=6)]
    expected = np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)
    res = ex.paired_permutation(a, b)
    assert res.exact
    assert res.p_value == pytest.approx(expected)  # 8 / 64
    greater = ex.paired_permutation(a, b, alternative="greater")
    assert greater.p_value == pytest.approx(np.mean(np.array(null) >= d.mean() - 1e-12))


def test_paired_permutation_close_to_independent_monte_carlo() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=40)
    b = a + rng.normal(0.3, 1.0, size=40)
    d = b - a
    signs = np.random.default_rng(123).choice([-1.0, 1.0], size=(100_000, 40))
    mc = np.mean(np.abs((signs * d).mean(axis=1)) >= abs(d.mean()))
    res = ex.paired_permutation(a, b, seed=7)
    assert not res.exact
    assert res.p_value == pytest.approx(mc, abs=0.01)


def test_paired_permutation_null_difference_shifts_the_hypothesis() -> None:
    rng = np.random.default_rng(9)
    a = rng.normal(size=60)
    b = a + 0.5 + rng.normal(0, 0.3, size=60)
    assert ex.paired_permutation(a, b).p_value < 0.001
    assert ex.paired_permutation(a, b, null_difference=0.5).p_value > 0.05


def test_cohens_dz_value_and_interval() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(size=25)
    b = a + rng.normal(0.4, 1.0, size=25)
    d = b - a
    res = ex.cohens_dz(a, b)
    assert res.dz == pytest.approx(d.mean() / d.std(ddof=1))
    # independent inversion: scan the noncentrality on a fine grid
    t_obs = res.dz * math.sqrt(25)
    grid = np.linspace(-3, 7, 100_001)
    cdf = stats.nct.cdf(t_obs, 24, grid)
    low_nc = grid[np.argmin(np.abs(cdf - 0.975))]
    high_nc = grid[np.argmin(np.abs(cdf - 0.025))]
    assert res.interval.low == pytest.approx(low_nc / 5, abs=1e-3)
    assert res.interval.high == pytest.approx(high_nc / 5, abs=1e-3)


def test_cohens_dz_interval_agrees_with_large_sample_approximation() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    a = rng.normal(size=n)
    b = a + rng.normal(0.3, 1.0, size=n)
    res = ex.cohens_dz(a, b)
    se = math.sqrt(1 / n + res.dz**2 / (2 * n))
    assert res.interval.low == pytest.approx(res.dz - 1.959964 * se, abs=2e-3)
    assert res.interval.high == pytest.approx(res.dz + 1.959964 * se, abs=2e-3)


def test_cohens_dz_undefined_without_variance() -> None:
    with pytest.raises(ExperimentError, match="standard deviation is 0"):
        ex.cohens_dz([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])


def test_holm_and_bh_golden_and_ordering() -> None:
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    holm = ex.adjust_p_values(p, method="holm")
    # by hand: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, max(0.04*1, 0.06)=0.06
    assert holm.as_mapping() == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm.reject == (True, False, False, True)
    bh = ex.adjust_p_values(p, method="bh")
    # by hand: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 (step-up minima)
    assert bh.as_mapping() == pytest.approx({"a": 0.02, "b": 0.04, "c": 0.04, "d": 0.02})
    assert all(bh.reject)
    # BH never rejects less than Holm; both keep the order of the raw p-values
    assert all(h >= b for h, b in zip(holm.adjusted, bh.adjusted, strict=True))
    order = np.argsort(holm.raw)
    assert np.all(np.diff(np.array(holm.adjusted)[order]) >= 0)
    none = ex.adjust_p_values(p, method="none")
    assert none.adjusted == none.raw


def test_holm_and_bh_match_statsmodels_on_random_p_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from statsmodels.stats.multitest import multipletests

    # statsmodels' Holm branch runs gc.collect() per call (~0.1 s here); it changes nothing
    # in the numbers, so skip it to keep 200 reference calls fast.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)

    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 7, 20):
        for _ in range(20):
            raw = rng.uniform(0, 0.2, size=size) ** rng.uniform(0.5, 2)
            raw[rng.random(size) < 0.2] = raw[0]  # ties
            named = {f"v{i}": float(p) for i, p in enumerate(raw)}
            for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
                reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method=theirs)
                got = ex.adjust_p_values(named, method=ours)
                assert np.allclose(got.adjusted, adjusted, rtol=1e-12, atol=0)
                assert got.reject == tuple(bool(x) for x in reject)


def test_bad_inputs_raise_experiment_error() -> None:
    with pytest.raises(ExperimentError, match="same test examples"):
        ex.mcnemar_test([1, 0, 1], [1, 0])
    with pytest.raises(ExperimentError, match="pass/fail"):
        ex.mcnemar_test([1, 0, 0.5], [1, 0, 1])
    with pytest.raises(ExperimentError, match="NaN"):
        ex.paired_bootstrap([0.1, float("nan")], [0.2, 0.3])
    with pytest.raises(ExperimentError, match="empty"):
        ex.paired_permutation([], [])
    with pytest.raises(ExperimentError, match="1-d"):
        ex.paired_permutation([[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(ExperimentError, match="at least 2"):
        ex.paired_bootstrap([0.1], [0.2])
    with pytest.raises(ExperimentError, match="too few"):
        ex.paired_bootstrap([0.1, 0.3], [0.2, 0.5], n_resamples=10)
    with pytest.raises(ExperimentError, match="alpha"):
        ex.adjust_p_values({"a": 0.1}, alpha=1.5)
    with pytest.raises(ExperimentError, match="correction"):
        ex.adjust_p_values({"a": 0.1}, method="bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match=r"\[0, 1\]"):
        ex.adjust_p_values({"a": 1.2})
    with pytest.raises(ExperimentError):
        ex.wilson_interval(11, 10)
    with pytest.raises(ExperimentError):
        ex.tango_interval(5, 6, 10)
