"""DDSketch wrapper and windows: accuracy against numpy, serialization, merging across processes."""

from __future__ import annotations

import json
import math
import multiprocessing

import numpy as np
import pytest
from fixtures.telemetry import T0, FakeClock, sample_points, sketch_worker

from dspex.telemetry.metrics import MetricsStore
from dspex.telemetry.sketch import QuantileSketch, Stats, aggregate_from_dict
from dspex.telemetry.windows import TIERS, WindowedSeries, parse_window

QS = (0.5, 0.95, 0.99)
ACC = 0.01


def assert_quantiles_close(sketch: QuantileSketch, points: np.ndarray) -> None:
    for q in QS:
        # DDSketch guarantees relative accuracy against the order statistic x[floor(q(n-1))],
        # which is numpy's "lower" method.
        want = float(np.quantile(points, q, method="lower"))
        got = sketch.quantile(q)
        assert got is not None
        assert abs(got - want) <= ACC * abs(want) + 1e-12, (q, got, want)


def test_sketch_matches_numpy_within_relative_accuracy() -> None:
    points = np.concatenate([sample_points(1, 5000), -sample_points(2, 500), np.zeros(50)])
    s = QuantileSketch(ACC)
    for p in points:
        s.add(float(p))
    assert s.count == len(points)
    assert s.sum == pytest.approx(points.sum(), rel=1e-9)
    assert s.min == points.min() and s.max == points.max()
    assert_quantiles_close(s, points)
    assert s.quantile(0.0) == points.min() and s.quantile(1.0) == points.max()


def test_sketch_rejects_bad_input() -> None:
    s = QuantileSketch()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            s.add(bad)
    assert s.count == 0 and s.quantile(0.5) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        s.quantile(1.5)
    with pytest.raises(ValueError, match="relative_accuracy"):
        QuantileSketch(0.0)
    with pytest.raises(ValueError, match="bin_limit"):
        QuantileSketch(0.01, bin_limit=2)
    with pytest.raises(ValueError, match="different relative accuracy"):
        QuantileSketch(0.01).merge(_filled(QuantileSketch(0.02), [1.0]))
    with pytest.raises(TypeError):
        QuantileSketch().merge(Stats())
    with pytest.raises(ValueError, match="Unknown aggregate"):
        aggregate_from_dict({"type": "tdigest"})


def _filled(s: QuantileSketch, values: list[float]) -> QuantileSketch:
    for v in values:
        s.add(v)
    return s


def test_sketch_and_stats_round_trip_through_json() -> None:
    points = sample_points(3, 2000)
    s = _filled(QuantileSketch(), [float(p) for p in points] + [0.0, -0.5])
    back = QuantileSketch.from_dict(json.loads(json.dumps(s.to_dict())))
    assert (back.count, back.sum, back.min, back.max) == (s.count, s.sum, s.min, s.max)
    for q in (0.01, 0.3, *QS):
        assert back.quantile(q) == s.quantile(q)
    st = Stats()
    for v in (3.0, -1.0, 2.0):
        st.add(v)
    st2 = Stats.from_dict(json.loads(json.dumps(st.to_dict())))
    assert (st2.count, st2.sum, st2.min, st2.max) == (3, 4.0, -1.0, 3.0)
    empty = Stats.from_dict(json.loads(json.dumps(Stats().to_dict())))
    assert empty.count == 0 and empty.min == math.inf


def test_memory_stays_bounded_under_any_load() -> None:
    s = QuantileSketch(ACC, bin_limit=128)
    values = 10.0 ** np.random.default_rng(0).uniform(-20, 20, 20000)  # 40 orders of magnitude
    for v in values:
        s.add(float(v))
    assert len(s.pos.bins) <= 128 and len(s.neg.bins) == 0
    # collapsing only costs the lowest quantiles their accuracy; the high ones keep it
    want = float(np.quantile(values, 0.99, method="lower"))
    assert abs((s.quantile(0.99) or 0.0) - want) <= ACC * want
    series = WindowedSeries(QuantileSketch)
    for i in range(20000):
        series.add(float(i % 97) + 0.5, T0 + i * 7.3)  # 40 hours of data
    kept = sum(len(r) for r in series._rings) + len(series._open)
    assert kept <= sum(int(span / res) + 1 for res, span in TIERS) + len(TIERS) == 65


def test_windows_agree_with_numpy_on_the_same_points() -> None:
    clock = FakeClock(T0)
    store = MetricsStore(clock=clock)
    rng = np.random.default_rng(7)
    now = T0 + 3 * 3600 + 30  # three hours in, mid-bucket
    groups = {
        "recent": (now - 50, now, sample_points(11, 400)),  # inside every window
        "ten_min_ago": (now - 630, now - 570, sample_points(12, 300)),  # 15m, 1h, 24h only
        "two_h_ago": (now - 7260, now - 7140, sample_points(13, 300)),  # 24h only
    }
    timed = []
    for lo, hi, pts in groups.values():
        for t, p in zip(rng.uniform(lo, hi, pts.size), pts, strict=True):
            timed.append((float(t), float(p)))
    for t, p in sorted(timed):
        clock.t = t
        store.observe("dspex_provider_request_duration_seconds", p, provider="openai", model="m")
    clock.t = now
    r, ten, two = (g[2] for g in groups.values())
    expected = {
        "1m": r,
        "5m": r,
        "15m": np.concatenate([r, ten]),
        "1h": np.concatenate([r, ten]),
        "24h": np.concatenate([r, ten, two]),
    }
    for window, pts in expected.items():
        w = store.window("dspex_provider_request_duration_seconds", window)
        assert w.count == pts.size, window
        assert w.sum == pytest.approx(pts.sum(), rel=1e-9)
        assert w.avg == pytest.approx(pts.mean(), rel=1e-9)
        assert (w.min, w.max) == (pts.min(), pts.max())
        for q, got in zip(QS, (w.p50, w.p95, w.p99), strict=True):
            want = float(np.quantile(pts, q, method="lower"))
            assert got is not None and abs(got - want) <= ACC * want, (window, q, got, want)


def test_window_covers_at_least_its_length_and_at_most_one_bucket_more() -> None:
    series = WindowedSeries(Stats)
    for age in range(399, -1, -1):
        series.add(1.0, T0 - age)  # one point per second for the last 400 s, in time order
    # 1m: resolution 10 s -> between 60 and 70 points; 5m: resolution 60 s -> 300..360
    assert 60 <= series.stats("1m", T0).count <= 70
    assert 300 <= series.stats("5m", T0).count <= 360
    assert series.stats("1m", T0 + 200).count == 0  # aged out
    with pytest.raises(ValueError, match="between 0 and"):
        parse_window("2d")
    with pytest.raises(ValueError, match="Cannot read window"):
        parse_window("five minutes")
    assert parse_window("90s") == 90 and parse_window("1h") == 3600 and parse_window(30) == 30


def test_window_series_merge_and_serialization() -> None:
    a, b, both = (WindowedSeries(QuantileSketch) for _ in range(3))
    rng = np.random.default_rng(3)
    for i, t in enumerate(np.sort(rng.uniform(T0, T0 + 7200, 3000))):
        v = float(rng.lognormal())
        (a if i % 2 else b).add(v, float(t))
        both.add(v, float(t))
    back = WindowedSeries.from_dict(json.loads(json.dumps(b.to_dict())), QuantileSketch)
    a.merge(back)
    for window in ("1m", "15m", "1h", "24h"):
        ma, mb = a.stats(window, T0 + 7200), both.stats(window, T0 + 7200)
        assert (ma.count, ma.min, ma.max, ma.p50, ma.p99) == (mb.count, mb.min, mb.max, mb.p50, mb.p99)
        assert ma.sum == pytest.approx(mb.sum)


def test_sketches_from_four_processes_merge_to_the_sketch_of_all_points() -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with ctx.Pool(4) as pool:
        results = pool.starmap(sketch_worker, [(seed, 3000) for seed in range(4)])
    everything = np.concatenate([sample_points(seed, 3000) for seed in range(4)])
    one = _filled(QuantileSketch(), [float(p) for p in everything])

    merged = QuantileSketch()
    for r in results:
        merged.merge(QuantileSketch.from_dict(r["sketch"]))
    store = MetricsStore(clock=FakeClock())
    for r in results:
        store.merge(r["store"])
    w = store.window("dspex_prediction_duration_seconds", "5m")

    assert merged.count == one.count == w.count == everything.size
    assert merged.sum == pytest.approx(everything.sum()) and w.sum == pytest.approx(everything.sum())
    for q, wq in zip(QS, (w.p50, w.p95, w.p99), strict=True):
        assert merged.quantile(q) == one.quantile(q) == wq  # same bins: merging loses nothing
    assert_quantiles_close(merged, everything)
    (series,) = store.series("dspex_prediction_duration_seconds")
    assert series.value == everything.size and series.buckets[-1] == (math.inf, everything.size)
