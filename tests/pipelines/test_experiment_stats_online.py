"""Online A/B: sticky assignment, SRM, Welch / z golden numbers, always-valid confidence
sequences under continuous monitoring, guardrails and the verdict."""

import hashlib
import math

import numpy as np
import pytest
from dspex.pipelines import experiments as ex
from dspex.pipelines.experiments import sequential as sq
from scipy import stats

from dspex.errors import ExperimentError
from dspex.telemetry import attach, detach

# --- assignment ------------------------------------------------------------------------------


def test_bucket_is_blake2b_of_the_salted_key() -> None:
    digest = hashlib.blake2b(b"exp-1\x1fuser-42", digest_size=8).digest()
    assert ex.unit_bucket("user-42", "exp-1") == int.from_bytes(digest, "big") / 2**64
    assert 0.0 <= ex.unit_bucket("user-42", "exp-1") < 1.0
    assert ex.unit_bucket("user-42", "exp-2") != ex.unit_bucket("user-42", "exp-1")


def test_assignment_is_sticky_and_follows_the_weights() -> None:
    assigner = ex.Assigner.create("exp-7", {"control": 0.8, "treatment": 0.2})
    keys = [f"user-{i}" for i in range(20_000)]
    arms = assigner.assign_many(keys)
    assert arms == ex.Assigner.create("exp-7", {"control": 0.8, "treatment": 0.2}).assign_many(keys)
    assert ex.assign("user-3", {"control": 0.8, "treatment": 0.2}, salt="exp-7") == arms[3]
    share = arms.count("treatment") / len(arms)
    assert share == pytest.approx(0.2, abs=0.01)
    counts = {"control": arms.count("control"), "treatment": arms.count("treatment")}
    assert not ex.srm_check(counts, assigner.weights).flagged


def test_ramping_weights_only_moves_units_across_the_boundary() -> None:
    small = ex.Assigner.create("ramp", {"treatment": 0.05, "control": 0.95})
    large = ex.Assigner.create("ramp", {"treatment": 0.50, "control": 0.50})
    keys = [f"u{i}" for i in range(5000)]
    before, after = small.assign_many(keys), large.assign_many(keys)
    # every unit already in treatment stays there when its share grows
    assert all(a == "treatment" for b, a in zip(before, after, strict=True) if b == "treatment")


def test_zero_weight_arm_gets_no_units_and_equal_split_from_names() -> None:
    a = ex.Assigner.create("z", {"a": 1.0, "off": 0.0, "b": 1.0})
    assert "off" not in set(a.assign_many(str(i) for i in range(3000)))
    eq = ex.Assigner.create("z", ["x", "y", "z"])
    assert eq.probabilities == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_assigner_bad_inputs() -> None:
    with pytest.raises(ExperimentError, match="salt"):
        ex.Assigner.create("", ["a", "b"])
    with pytest.raises(ExperimentError, match="weight"):
        ex.Assigner.create("s", {"a": -1.0, "b": 1.0})
    with pytest.raises(ExperimentError, match="weight"):
        ex.Assigner.create("s", {"a": float("nan")})
    with pytest.raises(ExperimentError, match="positive"):
        ex.Assigner.create("s", {"a": 0.0})
    with pytest.raises(ExperimentError, match="at least one arm"):
        ex.Assigner.create("s", {})
    with pytest.raises(ExperimentError, match="unit key"):
        ex.Assigner.create("s", ["a"]).assign(None)  # type: ignore[arg-type]


# --- sample ratio mismatch -------------------------------------------------------------------


def test_srm_flags_a_skewed_split_and_not_a_fair_one() -> None:
    configured = {"control": 1.0, "treatment": 1.0}
    keys = [f"user-{i}" for i in range(4000)]
    arms = ex.Assigner.create("srm", configured).assign_many(keys)
    fair = {"control": arms.count("control"), "treatment": arms.count("treatment")}
    assert not ex.srm_check(fair, configured).flagged
    # inject skewed assignment: the serving side really splits 55/45 while 50/50 is configured
    buggy = ex.Assigner.create("srm", {"control": 0.55, "treatment": 0.45}).assign_many(keys)
    skewed = {"control": buggy.count("control"), "treatment": buggy.count("treatment")}
    res = ex.srm_check(skewed, configured)
    assert res.flagged and res.checked
    assert "Sample ratio mismatch" in res.message
    # golden: chi-square by hand
    exp = sum(skewed.values()) / 2
    stat = sum((o - exp) ** 2 / exp for o in skewed.values())
    assert res.statistic == pytest.approx(stat)
    assert res.p_value == pytest.approx(stats.chi2.sf(stat, 1))
    # a logging bug that drops every 5th treatment unit is flagged too
    seen = 0
    logged = {"control": fair["control"], "treatment": 0}
    for arm in arms:
        if arm == "treatment":
            seen += 1
            logged["treatment"] += seen % 5 != 0
    assert ex.srm_check(logged, configured).flagged


def test_srm_false_alarm_rate_on_fair_splits_is_tiny() -> None:
    flagged = 0
    for salt in range(300):
        arms = ex.Assigner.create(f"s{salt}", ["a", "b", "c"]).assign_many(
            str(i) for i in range(600)
        )
        counts = {k: arms.count(k) for k in "abc"}
        flagged += ex.srm_check(counts, {"a": 1, "b": 1, "c": 1}).flagged
    assert flagged <= 2  # expected 0.3 at p < 0.001


def test_srm_needs_eight_expected_units_per_arm() -> None:
    res = ex.srm_check({"a": 14, "b": 1}, {"a": 1, "b": 1})
    assert not res.checked and not res.flagged  # expects 7.5 per arm
    res = ex.srm_check({"a": 15, "b": 1}, {"a": 1, "b": 1})
    assert res.checked and res.flagged
    # traffic reaching a zero-weight arm is a mismatch outright
    assert ex.srm_check({"a": 50, "b": 50, "off": 1}, {"a": 1, "b": 1, "off": 0}).flagged
    with pytest.raises(ExperimentError, match="must match"):
        ex.srm_check({"a": 1}, {"a": 1, "b": 1})


# --- fixed-horizon tests ---------------------------------------------------------------------


def test_arm_summary_matches_numpy_and_merges() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=500)
    whole = ex.ArmSummary.from_values(x)
    parts = ex.ArmSummary.from_values(x[:123]) + ex.ArmSummary.from_values(x[123:])
    streamed = ex.ArmSummary.empty()
    for v in x:
        streamed = streamed.add(float(v))
    for s in (whole, parts, streamed):
        assert s.n == 500
        assert s.mean == pytest.approx(x.mean())
        assert s.variance == pytest.approx(x.var(ddof=1))
    counts = ex.ArmSummary.from_counts(30, 100)
    ones = ex.ArmSummary.from_values([1] * 30 + [0] * 70)
    assert counts.variance == pytest.approx(ones.variance) and counts.successes == 30
    with pytest.raises(ExperimentError):
        ex.ArmSummary.from_counts(5, 3)
    with pytest.raises(ExperimentError):
        ex.ArmSummary.empty().add(float("inf"))


def test_welch_matches_scipy_on_raw_data() -> None:
    rng = np.random.default_rng(2)
    control = rng.normal(100, 15, size=80)
    treatment = rng.normal(108, 25, size=60)
    res = ex.welch_t_test(control, treatment)
    ref = stats.ttest_ind(treatment, control, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert res.df == pytest.approx(ref.df)
    assert res.interval.low == pytest.approx(ci.low)
    assert res.interval.high == pytest.approx(ci.high)
    # the same from mergeable summaries
    again = ex.welch_t_test(
        ex.ArmSummary.from_values(control), ex.ArmSummary.from_values(treatment)
    )
    assert again.p_value == pytest.approx(res.p_value)
    with pytest.raises(ExperimentError, match="at least 2"):
        ex.welch_t_test([1.0], [1.0, 2.0])


def test_two_proportion_z_matches_hand_computation() -> None:
    xc, nc, xt, nt = 120, 1000, 150, 1000
    res = ex.two_proportion_z_test(xc, nc, xt, nt)
    pc, pt_, pooled = xc / nc, xt / nt, (xc + xt) / (nc + nt)
    z = (pt_ - pc) / math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nt))
    assert res.statistic == pytest.approx(z)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))

    # Newcombe's hybrid score interval from two Wilson intervals, by hand
    def wilson(x: int, n: int) -> tuple[float, float]:
        zc = stats.norm.isf(0.025)
        p = x / n
        centre = (p + zc**2 / (2 * n)) / (1 + zc**2 / n)
        half = zc / (1 + zc**2 / n) * math.sqrt(p * (1 - p) / n + zc**2 / (4 * n * n))
        return centre - half, centre + half

    lt, ut = wilson(xt, nt)
    lc, uc = wilson(xc, nc)
    d = pt_ - pc
    assert res.interval.low == pytest.approx(d - math.sqrt((pt_ - lt) ** 2 + (uc - pc) ** 2))
    assert res.interval.high == pytest.approx(d + math.sqrt((ut - pt_) ** 2 + (pc - lc) ** 2))
    flat = ex.two_proportion_z_test(0, 50, 0, 50)
    assert flat.p_value == 1.0


# --- confidence sequences --------------------------------------------------------------------


def test_sequence_radius_and_p_value_match_the_formula() -> None:
    alpha, tuning_n = 0.05, 5000
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning_n
    n_c, n_t, m_c, m_t, v_c, v_t = 400, 420, 1.0, 1.18, 2.0, 2.5
    var_est = v_c / n_c + v_t / n_t
    n = n_c + n_t
    s2 = var_est * n
    radius = math.sqrt(s2) * math.sqrt(
        2 * (n * rho2 + 1) / (n * n * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha)
    )
    est, low, high, p = sq.difference_sequence(
        n_c, m_c, v_c, n_t, m_t, v_t, alpha=alpha, tuning_n=tuning_n
    )
    assert float(est) == pytest.approx(0.18)
    assert float(high - est) == pytest.approx(radius)
    assert float(est - low) == pytest.approx(radius)
    p_hand = math.sqrt(n * rho2 + 1) * math.exp(
        -(n * n * rho2 * 0.18**2) / (2 * s2 * (n * rho2 + 1))
    )
    assert float(p) == pytest.approx(min(1.0, p_hand))
    # the CS is wider than the fixed-horizon z interval at the same n
    assert radius > stats.norm.isf(alpha / 2) * math.sqrt(var_est)


def test_p_value_and_interval_agree() -> None:
    rng = np.random.default_rng(4)
    n = rng.integers(50, 5000, size=2000)
    est = rng.normal(0, 0.2, size=2000)
    var = rng.uniform(0.5, 2.0, size=2000)
    _, low, high, p = sq.difference_sequence(n, 0.0, var, n, est, var, alpha=0.05, tuning_n=3000)
    excludes = (low > 0) | (high < 0)
    assert np.array_equal(excludes, p <= 0.05)


def _cumulative_looks(a: np.ndarray, b: np.ndarray, looks: np.ndarray):
    n = looks[None, :].astype(float)
    out = []
    for x in (a, b):
        s = np.cumsum(x, axis=1)[:, looks - 1]
        q = np.cumsum(x * x, axis=1)[:, looks - 1]
        mean = s / n
        out.append((n, mean, (q - n * mean * mean) / (n - 1)))
    return out


def test_aa_continuous_monitoring_keeps_the_error_rate() -> None:
    """1,000 A/A experiments, each looked at every 10 units from 100 to 2,000 per arm."""
    rng = np.random.default_rng(2025)
    looks = np.arange(100, 2001, 10)
    for kind in ("mean", "binary"):
        if kind == "mean":
            a, b = rng.normal(5, 2, size=(2, 1000, 2000))
        else:
            a, b = (rng.random((2, 1000, 2000)) < 0.3).astype(float)
        (n_a, m_a, v_a), (n_b, m_b, v_b) = _cumulative_looks(a, b, looks)
        _, low, high, p = sq.difference_sequence(
            n_a, m_a, v_a, n_b, m_b, v_b, alpha=0.05, tuning_n=2000
        )
        ever = np.mean(np.any((low > 0) | (high < 0), axis=1))
        assert ever <= 0.05, kind
        assert np.mean(np.any(p <= 0.05, axis=1)) == ever  # the always-valid p says the same
        # the naive fixed-horizon z read at every look would reject far more often
        z = (m_b - m_a) / np.sqrt(v_a / n_a + v_b / n_b)
        assert np.mean(np.any(np.abs(z) > 1.96, axis=1)) > 0.2


def test_sequence_detects_a_real_effect() -> None:
    rng = np.random.default_rng(8)
    looks = np.arange(100, 3001, 50)
    a = (rng.random((300, 3000)) < 0.30).astype(float)
    b = (rng.random((300, 3000)) < 0.36).astype(float)  # +6 pp
    (n_a, m_a, v_a), (n_b, m_b, v_b) = _cumulative_looks(a, b, looks)
    _, low, _, _ = sq.difference_sequence(n_a, m_a, v_a, n_b, m_b, v_b, alpha=0.05, tuning_n=4000)
    assert np.mean(np.any(low > 0, axis=1)) >= 0.8


def test_monitor_keeps_the_first_crossing() -> None:
    mon = sq.SequentialMonitor(alpha=0.05, keep_history=True)
    looks = [((300, 1000), (305, 1000)), ((600, 2000), (720, 2000)), ((900, 3000), (1050, 3000))]
    results = []
    for (xc, nc), (xt, nt) in looks:
        step = ex.sequential_difference(
            ex.ArmSummary.from_counts(xc, nc), ex.ArmSummary.from_counts(xt, nt)
        )
        results.append(mon.update(step))
    first, cross, later = results
    assert not first.excludes_zero
    assert cross.excludes_zero and mon.crossed_at_n == 4000 and mon.crossed_sign == 1
    assert later.excludes_zero and mon.crossed_at_n == 4000  # the first crossing is kept
    assert later.low >= cross.low and later.high <= cross.high  # running intersection
    assert later.p_value <= cross.p_value <= first.p_value  # running minimum
    assert len(mon.history) == 3


# --- the verdict -----------------------------------------------------------------------------


def _arms(rng: np.random.Generator, n: int, rate_t: float, latency_t: float) -> dict:
    def arm(rate: float, latency: float) -> dict:
        return {
            "success": ex.ArmSummary.from_values((rng.random(n) < rate).astype(float)),
            "latency_ms": ex.ArmSummary.from_values(rng.normal(latency, 20, size=n)),
            "error": ex.ArmSummary.from_values((rng.random(n) < 0.02).astype(float)),
        }

    return {"control": arm(0.30, 200), "treatment": arm(rate_t, latency_t)}


WEIGHTS = {"control": 0.5, "treatment": 0.5}
GUARDS = (ex.Guardrail("latency_ms", 50.0), ex.Guardrail("error", 0.05))


def test_verdict_collecting_then_winner() -> None:
    rng = np.random.default_rng(1)
    plan = ex.OnlinePlan("success", primary_kind="binary", min_units_per_arm=200, guardrails=GUARDS)
    early = ex.online_verdict(plan, _arms(rng, 150, 0.45, 205), weights=WEIGHTS, control="control")
    assert early.status == "collecting" and early.winner is None
    assert "needs 200 per arm" in early.message
    late = ex.online_verdict(plan, _arms(rng, 3000, 0.36, 205), weights=WEIGHTS, control="control")
    assert late.status == "winner" and late.winner == "treatment"
    comp = late.comparisons[0]
    assert comp.decision == "better" and comp.sequential.low > 0
    assert comp.fixed is not None and comp.fixed.test == "two-proportion-z"
    assert {g.metric: g.status for g in late.guardrails} == {"latency_ms": "ok", "error": "ok"}


def test_verdict_guardrail_breach_stops_even_a_winner() -> None:
    rng = np.random.default_rng(2)
    plan = ex.OnlinePlan("success", primary_kind="binary", guardrails=GUARDS)
    verdict = ex.online_verdict(
        plan, _arms(rng, 3000, 0.40, 300), weights=WEIGHTS, control="control"
    )
    assert verdict.status == "guardrail_breached" and verdict.winner is None
    latency = next(g for g in verdict.guardrails if g.metric == "latency_ms")
    assert latency.status == "breached" and latency.interval.low > 50
    assert "latency_ms" in verdict.message


def test_verdict_invalid_on_srm() -> None:
    rng = np.random.default_rng(3)
    plan = ex.OnlinePlan("success", primary_kind="binary")
    arms = _arms(rng, 1000, 0.30, 200)
    verdict = ex.online_verdict(
        plan, arms, weights=WEIGHTS, control="control", assigned={"control": 1100, "treatment": 900}
    )
    assert verdict.status == "invalid" and verdict.srm.flagged


def test_verdict_continue_without_evidence_and_lower_is_better() -> None:
    rng = np.random.default_rng(4)
    plan = ex.OnlinePlan("success", primary_kind="binary")
    same = ex.online_verdict(plan, _arms(rng, 1000, 0.30, 200), weights=WEIGHTS, control="control")
    assert same.status == "continue" and "read at any time" in same.message
    faster = ex.OnlinePlan("latency_ms", higher_is_better=False)
    v = ex.online_verdict(faster, _arms(rng, 1000, 0.30, 170), weights=WEIGHTS, control="control")
    assert v.status == "winner" and v.comparisons[0].fixed is not None
    assert v.comparisons[0].fixed.test == "welch-t"
    slower = ex.online_verdict(
        faster, _arms(rng, 1000, 0.30, 240), weights=WEIGHTS, control="control"
    )
    assert slower.status == "control_wins"


def test_verdict_fixed_mode_waits_for_the_planned_size() -> None:
    rng = np.random.default_rng(5)
    plan = ex.OnlinePlan("success", primary_kind="binary", mode="fixed", planned_units_per_arm=2000)
    early = ex.online_verdict(plan, _arms(rng, 1000, 0.40, 200), weights=WEIGHTS, control="control")
    assert early.status == "collecting"
    done = ex.online_verdict(plan, _arms(rng, 2000, 0.30, 200), weights=WEIGHTS, control="control")
    assert done.status in ("no_difference", "winner", "control_wins")
    assert done.comparisons[0].fixed is not None
    assert (done.status == "no_difference") == (done.comparisons[0].fixed.p_value > 0.05)


def test_verdict_emits_an_event() -> None:
    seen: list[tuple[dict, dict]] = []
    attach(
        "test-online-verdict",
        ("dspex", "experiment", "online", "verdict"),
        lambda e, m, md, c: seen.append((m, md)),
    )
    try:
        rng = np.random.default_rng(6)
        ex.online_verdict(
            ex.OnlinePlan("success"), _arms(rng, 300, 0.3, 200), weights=WEIGHTS, control="control"
        )
    finally:
        detach("test-online-verdict")
    assert seen and seen[0][0]["units"] == 600 and seen[0][1]["status"] == "continue"


def test_plan_and_verdict_bad_inputs() -> None:
    with pytest.raises(ExperimentError, match="planned_units_per_arm"):
        ex.OnlinePlan("m", mode="fixed")
    with pytest.raises(ExperimentError, match="alpha"):
        ex.OnlinePlan("m", alpha=0.0)
    with pytest.raises(ExperimentError, match="max_increase"):
        ex.Guardrail("latency_ms", -1.0)
    rng = np.random.default_rng(7)
    arms = _arms(rng, 200, 0.3, 200)
    with pytest.raises(ExperimentError, match="Control arm"):
        ex.online_verdict(ex.OnlinePlan("success"), arms, weights=WEIGHTS, control="nope")
    with pytest.raises(ExperimentError, match="no summary for metric"):
        ex.online_verdict(ex.OnlinePlan("clicks"), arms, weights=WEIGHTS, control="control")
    with pytest.raises(ExperimentError, match="tuning_n"):
        sq.mixture_rho(0.05, 0)
