"""compare_variants and non_inferiority: verdicts, conclusions written from the numbers,
A/A error rates near alpha, and non-inferiority at the margin boundary."""

import json

import numpy as np
import pytest
from dspex.pipelines import experiments as ex
from dspex.pipelines.experiments import stats

from dspex.errors import ExperimentError
from dspex.telemetry import attach_many, detach


def _variant_of(
    rng: np.random.Generator, base: np.ndarray, p_gain: float, p_loss: float, base_rate: float = 0.6
) -> np.ndarray:
    """A variant that fixes a share p_gain and breaks a share p_loss of all examples."""
    u = rng.random(base.size)
    var = base.copy()
    var[(base == 0) & (u < p_gain / (1 - base_rate))] = 1
    var[(base == 1) & (u < p_loss / base_rate)] = 0
    return var


def _paired_binary(
    rng: np.random.Generator, n: int, p_gain: float, p_loss: float, base_rate: float = 0.6
):
    base = (rng.random(n) < base_rate).astype(int)
    return base, _variant_of(rng, base, p_gain, p_loss, base_rate)


def test_binary_winner_needs_significance_and_margin() -> None:
    rng = np.random.default_rng(3)
    base, strong = _paired_binary(rng, 300, 0.15, 0.02)
    same = base.copy()
    same[:6] = 1 - same[:6]  # a handful of flips: no real difference
    report = ex.compare_variants(base, {"strong": strong, "same": same}, kind="binary", margin=0.02)
    assert report.winner == "strong"
    s = report.variant("strong")
    assert s.verdict == "better" and s.significant
    assert s.test.startswith("mcnemar-")
    assert s.difference == pytest.approx(strong.mean() - base.mean())
    assert s.difference_interval.low > 0
    assert s.variant_interval is not None and s.variant_interval.method == "wilson"
    # Holm with two variants: the smallest p-value is doubled
    ps = {v.name: v.p_value for v in report.variants}
    smallest = min(ps, key=lambda k: ps[k])
    assert report.variant(smallest).p_value_adjusted == pytest.approx(min(1.0, 2 * ps[smallest]))
    assert report.variant("same").verdict == "no_detectable_difference"
    # the conclusion quotes the numbers it was written from
    text = report.conclusion
    assert text.startswith("Winner: strong beats the baseline by")
    assert f"+{s.difference * 100:.1f} pp" in text
    assert f"{s.difference_interval.low * 100:.1f} pp" in text
    assert "same: no detectable difference at n=300, MDE" in text
    mde = report.variant("same").power.mde
    assert mde is not None and f"MDE {mde * 100:.1f} pp" in text


def test_significant_but_below_margin_is_not_a_winner() -> None:
    base = np.zeros(2000, dtype=int)
    base[:1000] = 1
    var = base.copy()
    var[1000:1060] = 1  # +3 pp, 60 one-way gains: overwhelmingly significant
    report = ex.compare_variants(base, {"tiny": var}, kind="binary", margin=0.05)
    v = report.variant("tiny")
    assert v.significant and v.verdict == "below_margin"
    assert report.winner is None
    assert "less than the margin" in report.conclusion
    # with no margin the same variant wins
    assert ex.compare_variants(base, {"tiny": var}, kind="binary").winner == "tiny"


def test_worse_variant_is_reported_as_worse() -> None:
    rng = np.random.default_rng(8)
    base, worse = _paired_binary(rng, 400, 0.02, 0.15)
    report = ex.compare_variants(base, {"worse": worse}, kind="binary", margin=0.02)
    assert report.variant("worse").verdict == "worse"
    assert report.winner is None
    assert "worse is worse than the baseline" in report.conclusion


def test_no_detectable_difference_conclusion_names_n_and_mde() -> None:
    rng = np.random.default_rng(4)
    base, var = _paired_binary(rng, 80, 0.05, 0.04)
    report = ex.compare_variants(base, {"v": var}, kind="binary", margin=0.05)
    assert report.winner is None
    v = report.variant("v")
    assert v.verdict == "no_detectable_difference"
    assert report.conclusion.startswith("No variant beats the baseline")
    assert "no detectable difference at n=80, MDE" in report.conclusion
    assert v.power.sufficient is False
    assert f"about n={v.power.n_for_margin:,} examples are needed" in report.conclusion


def test_scored_comparison_uses_permutation_bootstrap_and_dz() -> None:
    rng = np.random.default_rng(12)
    base = rng.uniform(0.2, 0.9, size=150)
    better = np.clip(base + rng.normal(0.06, 0.08, size=150), 0, 1)
    noise = np.clip(base + rng.normal(0.0, 0.08, size=150), 0, 1)
    report = ex.compare_variants(
        base, {"better": better, "noise": noise}, kind="scored", margin=0.02, seed=3
    )
    b = report.variant("better")
    assert report.winner == "better"
    assert b.test == "paired-permutation"
    assert b.bootstrap is not None and b.permutation is not None and b.standardized is not None
    assert b.difference_interval == b.bootstrap.interval
    assert b.p_value == b.permutation.p_value
    direct = ex.cohens_dz(base, better)
    assert b.standardized.dz == pytest.approx(direct.dz)
    assert report.variant("noise").verdict == "no_detectable_difference"
    # reproducible with the seed
    again = ex.compare_variants(
        base, {"better": better, "noise": noise}, kind="scored", margin=0.02, seed=3
    )
    assert again.to_dict() == report.to_dict()


def test_report_serialises_to_json() -> None:
    rng = np.random.default_rng(0)
    base, var = _paired_binary(rng, 100, 0.1, 0.05)
    report = ex.compare_variants(base, {"a": var, "b": base}, kind="binary", correction="bh")
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["correction"] == "bh"
    assert [v["name"] for v in payload["variants"]] == ["a", "b"]
    assert payload["variants"][0]["mcnemar"]["gains"] >= 0
    assert payload["conclusion"] == report.conclusion


def test_compare_emits_a_span() -> None:
    seen: list[tuple[tuple[str, ...], dict, dict]] = []
    attach_many(
        "test-experiment-compare",
        [("dspex", "experiment", "compare", "stop")],
        lambda ev, m, md, cfg: seen.append((ev, m, md)),
    )
    try:
        ex.compare_variants([1, 0, 1, 1], {"v": [1, 1, 1, 1]}, kind="binary")
    finally:
        detach("test-experiment-compare")
    assert len(seen) == 1
    _, measurements, metadata = seen[0]
    assert measurements["n"] == 4 and measurements["duration_s"] >= 0
    assert metadata["kind"] == "binary" and metadata["winner"] is None


def test_compare_bad_inputs() -> None:
    with pytest.raises(ExperimentError, match="at least one variant"):
        ex.compare_variants([1, 0], {}, kind="binary")
    with pytest.raises(ExperimentError, match="same test examples"):
        ex.compare_variants([1, 0, 1], {"v": [1, 0]}, kind="binary")
    with pytest.raises(ExperimentError, match="kind"):
        ex.compare_variants([1, 0], {"v": [1, 0]}, kind="ordinal")  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="margin"):
        ex.compare_variants([1, 0], {"v": [1, 0]}, kind="binary", margin=2.0)
    with pytest.raises(ExperimentError, match="correction"):
        ex.compare_variants([1, 0], {"v": [1, 0]}, correction="sidak")  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="pass/fail"):
        ex.compare_variants([0.2, 0.4], {"v": [0.1, 0.9]}, kind="binary")
    with pytest.raises(ExperimentError, match="No variant named"):
        ex.compare_variants([1, 0, 1], {"v": [1, 1, 1]}).variant("w")


# --- A/A: identical variants reject at about alpha -----------------------------------------


def test_aa_mcnemar_rejects_at_most_alpha() -> None:
    rng = np.random.default_rng(2024)
    rejections = 0
    for _ in range(1000):
        base, var = _paired_binary(rng, 100, 0.1, 0.1)  # same pass rate, 20% disagree
        rejections += ex.mcnemar_test(base, var).p_value <= 0.05
    assert 0.015 <= rejections / 1000 <= 0.065


def test_aa_holm_keeps_the_family_wise_rate() -> None:
    rng = np.random.default_rng(77)
    any_reject = 0
    for _ in range(500):
        base = (rng.random(100) < 0.6).astype(int)
        ps = {
            name: ex.mcnemar_test(base, _variant_of(rng, base, 0.1, 0.1)).p_value for name in "abc"
        }
        any_reject += any(ex.adjust_p_values(ps, method="holm").reject)
    assert any_reject / 500 <= 0.07


def test_aa_permutation_and_bootstrap_reject_near_alpha() -> None:
    rng = np.random.default_rng(31)
    sims, n = 400, 40
    perm_rej = boot_rej = 0
    for i in range(sims):
        a = rng.normal(size=n)
        b = a + rng.normal(0.0, 1.0, size=n)  # identical arms up to per-example noise
        perm_rej += ex.paired_permutation(a, b, n_resamples=999, seed=i).p_value <= 0.05
        iv = ex.paired_bootstrap(a, b, n_resamples=999, seed=i).interval
        boot_rej += not iv.contains(0.0)
    assert perm_rej / sims <= 0.07
    assert boot_rej / sims <= 0.08  # BCa is slightly liberal at n=40
    assert perm_rej > 0 and boot_rej > 0  # and not dead either


# --- non-inferiority ------------------------------------------------------------------------


def test_non_inferiority_binary_golden_tango() -> None:
    # champion vs canary with 16 gains and 6 losses over 161 pairs (the book's table)
    base = np.array([1] * 59 + [1] * 6 + [0] * 16 + [0] * 80)
    canary = np.array([1] * 59 + [0] * 6 + [1] * 16 + [0] * 80)
    res = ex.non_inferiority(base, canary, margin=0.0, kind="binary")
    # margin 0: one-sided McNemar z = (16 - 6) / sqrt(22)
    from scipy.stats import norm

    assert res.p_value == pytest.approx(norm.sf(10 / np.sqrt(22)))
    # one-sided 95% bound = lower end of Tango's two-sided 90% interval
    assert res.lower_bound == pytest.approx(ex.tango_interval(16, 6, 161, confidence=0.90).low)
    assert res.non_inferior and res.lower_bound > 0
    assert "non-inferior" in res.conclusion


def test_non_inferiority_binary_decision_agrees_with_bound() -> None:
    rng = np.random.default_rng(6)
    for margin in (0.01, 0.03, 0.06):
        champ, canary = _paired_binary(rng, 500, 0.04, 0.06)
        res = ex.non_inferiority(champ, canary, margin=margin, kind="binary")
        assert res.non_inferior == (res.lower_bound >= -margin)
        assert res.non_inferior == (res.p_value <= 0.05)


def test_non_inferiority_binary_at_the_boundary_claims_at_most_alpha() -> None:
    # canary truly 5 pp worse, margin 5 pp: H0 is (just) true
    rng = np.random.default_rng(41)
    claims = 0
    sims = 400
    for _ in range(sims):
        champ, canary = _paired_binary(rng, 400, 0.05, 0.10)
        claims += ex.non_inferiority(champ, canary, margin=0.05, kind="binary").non_inferior
    assert claims / sims <= 0.075


def test_non_inferiority_scored() -> None:
    rng = np.random.default_rng(10)
    champ = rng.uniform(0, 1, size=200)
    same = champ + rng.normal(0, 0.05, size=200)
    worse = champ - 0.1 + rng.normal(0, 0.05, size=200)
    ok = ex.non_inferiority(champ, same, margin=0.03, kind="scored", n_resamples=1999)
    assert ok.non_inferior and ok.lower_bound > -0.03 and ok.p_value < 0.05
    bad = ex.non_inferiority(champ, worse, margin=0.03, kind="scored", n_resamples=1999)
    assert not bad.non_inferior and bad.lower_bound < -0.03 and bad.p_value > 0.05
    assert "Non-inferiority not shown" in bad.conclusion
    direct = ex.paired_bootstrap(
        champ, same, confidence=0.95, alternative="greater", n_resamples=1999
    )
    assert ok.lower_bound == pytest.approx(direct.interval.low)


def test_non_inferiority_scored_at_the_boundary_claims_at_most_alpha() -> None:
    rng = np.random.default_rng(43)
    claims = 0
    sims = 200
    for i in range(sims):
        champ = rng.normal(size=40)
        canary = champ - 0.2 + rng.normal(0, 1.0, size=40)  # exactly margin worse
        claims += ex.non_inferiority(
            champ, canary, margin=0.2, kind="scored", n_resamples=999, seed=i
        ).non_inferior
    assert claims / sims <= 0.085


def test_non_inferiority_takes_margin_and_kind_positionally() -> None:
    # rollouts' NonInferiorityGate calls test(champion_scores, canary_scores, margin, kind)
    champ = [1.0, 0.0, 1.0, 1.0] * 50
    canary = [1.0, 0.0, 1.0, 1.0] * 50
    res = stats.non_inferiority(champ, canary, 0.05, "binary")
    assert res.non_inferior and res.kind == "binary" and res.margin == 0.05
    with pytest.raises(ExperimentError, match="kind"):
        stats.non_inferiority(champ, canary, 0.05, "ordinal")


def test_non_inferiority_bad_inputs() -> None:
    with pytest.raises(ExperimentError, match="margin"):
        ex.non_inferiority([1, 0], [1, 1], margin=-0.1)
    with pytest.raises(ExperimentError, match="same test examples"):
        ex.non_inferiority([1, 0], [1], margin=0.1)
    with pytest.raises(ExperimentError, match="at least 2"):
        ex.non_inferiority([0.5], [0.4], margin=0.1, kind="scored")


def test_stats_module_reexports_the_toolbox() -> None:
    for name in stats.__all__:
        assert hasattr(stats, name), name
    for name in ex.__all__:
        assert hasattr(ex, name), name


def test_degenerate_variants_get_honest_power_statements() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(50)
    same = ex.compare_variants(scores, {"same": scores.copy()}, kind="scored", margin=0.05)
    v = same.variant("same")
    assert v.verdict == "no_detectable_difference" and v.standardized is None
    assert v.power.mde is None and v.power.sufficient is None
    assert "cannot be estimated" in same.conclusion
    tiny = ex.compare_variants([1, 0, 1, 0], {"flip": [0, 1, 0, 1]}, kind="binary", margin=0.05)
    t = tiny.variant("flip")
    assert t.power.mde is None
    assert "n=4 is too small to detect any difference" in tiny.conclusion
    assert tiny.conclusion.count("would be needed") == 1
