"""Power and MDE: exact McNemar power checked by simulation, the n the report asks for really
detects the effect ~80% of the time, and the report says when a test set is too small."""

import numpy as np
import pytest
from dspex.pipelines import experiments as ex
from scipy import stats
from statsmodels.stats.power import TTestPower

from dspex.errors import ExperimentError


def _simulate_pairs(
    rng: np.random.Generator, sims: int, n: int, p_gain: float, p_loss: float
) -> tuple[np.ndarray, np.ndarray]:
    """``sims`` paired pass/fail experiments of ``n`` examples (baseline pass rate 0.6)."""
    u = rng.random((sims, n))
    both_pass = 0.6 - p_loss
    # [0, both_pass): both pass; then a loss slice, a gain slice; the rest both fail
    base = (u < both_pass + p_loss).astype(int)
    gain = (u >= both_pass + p_loss) & (u < both_pass + p_loss + p_gain)
    var = ((u < both_pass) | gain).astype(int)
    return base, var


def _mcnemar_rejects(base: np.ndarray, var: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    return np.array(
        [ex.mcnemar_test(b, v).p_value <= alpha for b, v in zip(base, var, strict=True)]
    )


def test_exact_mcnemar_power_matches_simulation() -> None:
    rng = np.random.default_rng(20240601)
    n, p_gain, p_loss = 120, 0.12, 0.05
    base, var = _simulate_pairs(rng, 1000, n, p_gain, p_loss)
    simulated = _mcnemar_rejects(base, var).mean()
    exact = ex.mcnemar_power(n, p_gain, p_loss)
    # 1000 simulations: standard error ~0.016
    assert simulated == pytest.approx(exact, abs=0.045)


def test_power_under_the_null_is_at_most_alpha() -> None:
    for n in (30, 100, 400):
        assert ex.mcnemar_power(n, 0.1, 0.1) <= 0.05
    assert ex.mcnemar_power(50, 0.0, 0.0) == 0.0


def test_plus_ten_points_detected_at_the_n_the_report_asks_for() -> None:
    # A variant that fixes 15% of examples and breaks 5%: +10 pp, 20% of pairs disagree.
    report = ex.power_report("binary", 60, nuisance=0.20, margin=0.10)
    assert report.sufficient is False
    n_needed = report.n_for_margin
    assert n_needed is not None
    # Connor's (1987) normal approximation lands close to the exact answer
    za, zb = stats.norm.isf(0.025), stats.norm.isf(0.2)
    connor = ((za * np.sqrt(0.2) + zb * np.sqrt(0.2 - 0.01)) / 0.1) ** 2
    assert n_needed == pytest.approx(connor, rel=0.15)
    assert (
        ex.mcnemar_power(n_needed, 0.15, 0.05) >= 0.8 > ex.mcnemar_power(n_needed - 5, 0.15, 0.05)
    )
    rng = np.random.default_rng(7)
    base, var = _simulate_pairs(rng, 1000, n_needed, 0.15, 0.05)
    detected = _mcnemar_rejects(base, var).mean()
    assert 0.76 <= detected <= 0.86
    # and the report at that n calls it sufficient
    assert ex.power_report("binary", n_needed, nuisance=0.20, margin=0.10).sufficient is True


def test_mde_is_where_power_reaches_the_target() -> None:
    mde = ex.mcnemar_mde(200, 0.2)
    assert mde is not None
    assert ex.mcnemar_power(200, (0.2 + mde) / 2, (0.2 - mde) / 2) == pytest.approx(0.8, abs=0.01)
    assert ex.mcnemar_mde(400, 0.2) < mde  # more data, smaller MDE
    assert (
        ex.mcnemar_mde(3, 0.2) is None
    )  # 3 pairs can never reach p <= 0.05 (needs 6 one-way pairs)


def test_paired_t_power_matches_statsmodels_and_simulation() -> None:
    assert ex.paired_t_power(50, 0.3, 1.0) == pytest.approx(TTestPower().power(0.3, 50, 0.05))
    n = ex.paired_t_sample_size(0.2, 1.0)
    assert n == int(
        np.ceil(TTestPower().solve_power(effect_size=0.2, nobs=None, alpha=0.05, power=0.8))
    )
    rng = np.random.default_rng(99)
    d = rng.normal(0.2, 1.0, size=(1000, n))
    detected = np.mean(stats.ttest_1samp(d, 0.0, axis=1).pvalue <= 0.05)
    assert 0.76 <= detected <= 0.85
    mde = ex.paired_t_mde(n, 1.0)
    assert mde == pytest.approx(0.2, abs=0.005)
    # huge effects: statsmodels returns NaN there; we must not
    assert ex.paired_t_power(200, 1.0, 1.0) == pytest.approx(1.0)
    assert ex.paired_t_mde(2, 1.0) is not None


def test_permutation_test_reaches_the_t_test_power() -> None:
    n = ex.paired_t_sample_size(0.5, 1.0)  # ~34 pairs
    rng = np.random.default_rng(5)
    sims = 150
    hits = 0
    for _ in range(sims):
        a = rng.normal(size=n)
        b = a + rng.normal(0.5, 1.0, size=n)
        hits += ex.paired_permutation(a, b, n_resamples=999, seed=1).p_value <= 0.05
    assert 0.68 <= hits / sims <= 0.92


def test_report_says_when_the_test_set_is_too_small() -> None:
    small = ex.power_report("binary", 50, nuisance=0.25, margin=0.05)
    assert small.sufficient is False
    assert small.n_for_margin is not None and small.n_for_margin > 50
    assert "Too small to certify a difference of 5.0 pp" in small.message
    assert f"n={small.n_for_margin:,} would be needed" in small.message
    assert small.mde is not None and f"{small.mde * 100:.1f} pp" in small.message
    big = ex.power_report("binary", small.n_for_margin, nuisance=0.25, margin=0.05)
    assert big.sufficient is True and "Enough to certify" in big.message
    scored = ex.power_report("scored", 100, nuisance=1.0)
    assert scored.margin is None and scored.sufficient is None
    assert "n=100 detects a difference of 0.2829" in scored.message


def test_report_from_results_reads_the_nuisance_off_the_data() -> None:
    base = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 1] * 10)
    var = base.copy()
    var[:20] = 1 - var[:20]  # 20 of 100 pairs disagree
    rep = ex.power_report_from_results(base, var, "binary", margin=0.1)
    assert rep.nuisance == pytest.approx(0.2)
    assert rep.n == 100
    rng = np.random.default_rng(1)
    a = rng.normal(size=80)
    b = a + rng.normal(0, 2.0, size=80)
    rep2 = ex.power_report_from_results(a, b, "scored")
    assert rep2.nuisance == pytest.approx(np.std(b - a, ddof=1))


def test_power_bad_inputs() -> None:
    with pytest.raises(ExperimentError):
        ex.mcnemar_power(0, 0.1, 0.1)
    with pytest.raises(ExperimentError):
        ex.mcnemar_power(10, 0.7, 0.6)
    with pytest.raises(ExperimentError):
        ex.mcnemar_sample_size(0.0, 0.2)
    with pytest.raises(ExperimentError):
        ex.power_report("binary", 100, nuisance=0.2, margin=1.5)
    with pytest.raises(ExperimentError):
        ex.power_report("ordinal", 100, nuisance=0.2)  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="power"):
        ex.power_report("scored", 100, nuisance=1.0, power=1.2)
