"""Noise and dust figures against references computed here, independently, from plain lists.

The references use sorted() and plain sums over exactly the samples in each window; the
engine uses histograms and running integer sums. Levels are on the 0.1 dB grid, as meters
report them, so the figures must agree to float precision.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from drivers.types import Quality, Reading
from edge_agent.measures import MeasureEngine
from edge_agent.measures.levels import N_BINS, figures, level_bin

UTC = timezone.utc
SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2024, 5, 1, 0, 0, tzinfo=SH).astimezone(UTC)  # local midnight in Shenzhen


def ref_leq(levels: list[float]) -> float:
    return 10 * math.log10(sum(10 ** (v / 10) for v in levels) / len(levels))


def ref_ln(levels: list[float], n_pct: int) -> float:
    desc = sorted(levels, reverse=True)
    return desc[math.ceil(n_pct / 100 * len(desc)) - 1]


def noise(t: datetime, value: float | None, quality: Quality = Quality.OK, sensor: str = "n1") -> Reading:
    return Reading(sensor, "noise_la", value, "dB(A)", t, quality)


def dust(t: datetime, value: float | None, quantity: str = "pm10", quality: Quality = Quality.OK) -> Reading:
    return Reading("d1", quantity, value, "ug/m3", t, quality)


def by_key(measures):
    return {(m.sensor_id, m.quantity, m.window_s, m.figure): m for m in measures}


def test_domain_example_leq_is_65_15() -> None:
    engine = MeasureEngine("Asia/Shanghai")
    for i, level in enumerate([60, 62, 58, 70, 65]):
        engine.add(noise(T0 + timedelta(seconds=i), level))
    block = by_key(engine.close_period(60, T0 + timedelta(minutes=1)))
    leq = block[("n1", "noise_la", 60, "leq")]
    assert round(leq.value, 2) == 65.15
    assert leq.samples == 5 and leq.valid is False  # 5 of 60 expected samples: under 75 %
    assert block[("n1", "noise_la", 60, "lmax")].value == 70
    assert block[("n1", "noise_la", 60, "lmin")].value == 58


def test_percentiles_on_a_1200_sample_window_match_sorting() -> None:
    rng = random.Random(7)
    engine = MeasureEngine("Asia/Shanghai")
    levels = [round(rng.uniform(35.0, 95.0), 1) for _ in range(1500)]
    for i, v in enumerate(levels):
        engine.add(noise(T0 + timedelta(seconds=i), v))
    now = T0 + timedelta(seconds=len(levels) - 1)
    got = by_key(engine.rolling(now))
    window = levels[-1200:]  # (now - 1200 s, now]
    assert got[("n1", "noise_la", 1200, "l10")].samples == 1200
    for n_pct in (5, 10, 50, 90, 95):
        assert got[("n1", "noise_la", 1200, f"l{n_pct}")].value == ref_ln(window, n_pct), n_pct
    # DOMAIN.md: n = 1200 -> L10 is the 120th, L50 the 600th, L90 the 1080th value, descending.
    desc = sorted(window, reverse=True)
    assert got[("n1", "noise_la", 1200, "l10")].value == desc[119]
    assert got[("n1", "noise_la", 1200, "l50")].value == desc[599]
    assert got[("n1", "noise_la", 1200, "l90")].value == desc[1079]
    assert got[("n1", "noise_la", 1200, "lmax")].value == max(window)
    assert got[("n1", "noise_la", 1200, "lmin")].value == min(window)
    assert got[("n1", "noise_la", 1200, "leq")].value == pytest.approx(ref_leq(window), abs=1e-9)
    for w in (60, 300, 1200):
        m = got[("n1", "noise_la", w, "leq")]
        assert m.value == pytest.approx(ref_leq(levels[-w:]), abs=1e-9) and m.samples == w and m.valid
    hour = got[("n1", "noise_la", 3600, "leq")]
    assert hour.value == pytest.approx(ref_leq(levels), abs=1e-9) and hour.valid is False  # 1500 of 3600


def test_histogram_ranks_with_ties_and_tiny_windows() -> None:
    for levels in ([50.0], [50.0, 50.0, 60.0], [70.0, 40.0], [55.5] * 7 + [80.1] * 3):
        hist = [0] * N_BINS
        for v in levels:
            hist[level_bin(v)] += 1
        figs = figures(hist, len(levels))
        for n_pct in (5, 10, 50, 90, 95):
            assert figs[f"l{n_pct}"] == ref_ln(levels, n_pct), (levels, n_pct)


def test_invalid_samples_are_left_out_and_counted() -> None:
    engine = MeasureEngine("Asia/Shanghai")
    good: list[float] = []
    for i in range(60):
        t = T0 + timedelta(seconds=i)
        if i % 6 == 0:
            engine.add(noise(t, None, Quality.COMM_ERROR))
        elif i % 6 == 1:
            engine.add(noise(t, 125.0, Quality.OUT_OF_RANGE))  # a value, but not a trusted one
        elif i % 6 == 2:
            engine.add(noise(t, 99.0, Quality.STALE))
        else:
            v = 50.0 + i / 10
            good.append(v)
            engine.add(noise(t, v))
    got = by_key(engine.rolling(T0 + timedelta(seconds=59)))
    leq = got[("n1", "noise_la", 60, "leq")]
    assert leq.samples == len(good) == 30 and leq.invalid == 30
    assert leq.value == pytest.approx(ref_leq(good), abs=1e-9)
    assert got[("n1", "noise_la", 60, "lmax")].value == max(good)
    assert leq.valid is False  # 30 of 60 valid < 75 %


def test_validity_rule_at_75_percent() -> None:
    for valid_n, expect in ((44, False), (45, True), (60, True)):
        engine = MeasureEngine("Asia/Shanghai", validity=0.75)
        for i in range(60):
            q = Quality.OK if i < valid_n else Quality.COMM_ERROR
            engine.add(dust(T0 + timedelta(seconds=i), 100.0 if q is Quality.OK else None, quality=q))
        m = by_key(engine.rolling(T0 + timedelta(seconds=59)))[("d1", "pm10", 60, "avg")]
        assert m.valid is expect, valid_n
        assert m.samples == valid_n and m.invalid == 60 - valid_n


def test_dust_rolling_means_match_plain_means() -> None:
    rng = random.Random(3)
    engine = MeasureEngine("Asia/Shanghai")
    values = {q: [float(rng.randint(0, 900)) for _ in range(4000)] for q in ("tsp", "pm10", "pm2_5")}
    for i in range(4000):
        for q, vs in values.items():
            engine.add(dust(T0 + timedelta(seconds=i), vs[i], quantity=q))
    got = by_key(engine.rolling(T0 + timedelta(seconds=3999)))
    for q, vs in values.items():
        for w in (60, 300, 900, 3600):
            m = got[("d1", q, w, "avg")]
            assert m.value == pytest.approx(math.fsum(vs[-w:]) / w, rel=1e-12), (q, w)
            assert m.samples == w and m.valid


def test_slow_polled_dust_meter_uses_its_own_period_for_validity() -> None:
    engine = MeasureEngine("Asia/Shanghai")
    engine.set_sample_period("d1", 10.0)
    for i in range(0, 900, 10):
        engine.add(dust(T0 + timedelta(seconds=i), 50.0 + i))
    got = by_key(engine.rolling(T0 + timedelta(seconds=899)))
    m = got[("d1", "pm10", 900, "avg")]
    assert m.samples == 90 and m.valid is True
    assert m.value == pytest.approx(np.mean([50.0 + i for i in range(0, 900, 10)]))


def test_windows_empty_after_a_long_outage() -> None:
    engine = MeasureEngine("Asia/Shanghai")
    for i in range(100):
        engine.add(noise(T0 + timedelta(seconds=i), 60.0))
        engine.add(dust(T0 + timedelta(seconds=i), 80.0))
    got = by_key(engine.rolling(T0 + timedelta(hours=2)))
    m = got[("n1", "noise_la", 60, "leq")]
    assert m.value is None and m.samples == 0 and m.valid is False
    assert got[("d1", "pm10", 3600, "avg")].value is None


def test_faster_than_expected_samples_grow_the_ring_and_stay_exact() -> None:
    rng = random.Random(11)
    engine = MeasureEngine("Asia/Shanghai")
    levels = [round(rng.uniform(40, 80), 1) for _ in range(4 * 3700)]
    for i, v in enumerate(levels):
        engine.add(noise(T0 + timedelta(seconds=i / 4), v))
    now = T0 + timedelta(seconds=(len(levels) - 1) / 4)
    got = by_key(engine.rolling(now))
    window = levels[-4 * 3600:]
    assert got[("n1", "noise_la", 3600, "leq")].value == pytest.approx(ref_leq(window), abs=1e-9)
    assert got[("n1", "noise_la", 3600, "l90")].value == ref_ln(window, 90)


def test_minute_and_hour_blocks_are_clock_aligned_and_handed_out_once() -> None:
    rng = random.Random(5)
    engine = MeasureEngine("Asia/Shanghai")
    start = T0 + timedelta(hours=10, seconds=-30)  # 30 s before a local hour
    levels = [round(rng.uniform(40, 90), 1) for _ in range(3700)]
    pm = [float(rng.randint(10, 500)) for _ in range(3700)]
    hour_end = T0 + timedelta(hours=11)
    minute_end = T0 + timedelta(hours=10, minutes=1)
    minute = {}
    for i in range(3700):
        engine.add(noise(start + timedelta(seconds=i), levels[i]))
        engine.add(dust(start + timedelta(seconds=i), pm[i]))
        if i == 92:  # 10:01:02, as the core does it: a moment after the minute
            minute = by_key(engine.close_period(60, minute_end))
    in_minute = [levels[i] for i in range(3700) if 30 <= i < 90]
    assert minute[("n1", "noise_la", 60, "leq")].value == pytest.approx(ref_leq(in_minute), abs=1e-9)
    assert minute[("n1", "noise_la", 60, "l50")].value == ref_ln(in_minute, 50)
    hour = by_key(engine.close_period(3600, hour_end))
    idx = range(30, 3630)  # [10:00, 11:00) local
    in_hour = [levels[i] for i in idx]
    assert hour[("n1", "noise_la", 3600, "leq")].value == pytest.approx(ref_leq(in_hour), abs=1e-9)
    assert hour[("n1", "noise_la", 3600, "l95")].value == ref_ln(in_hour, 95)
    assert hour[("n1", "noise_la", 3600, "leq")].samples == 3600 and hour[("n1", "noise_la", 3600, "leq")].valid
    pm_hour = [pm[i] for i in idx]
    assert hour[("d1", "pm10", 3600, "avg")].value == pytest.approx(math.fsum(pm_hour) / 3600)
    assert hour[("d1", "pm10", 3600, "min")].value == min(pm_hour)
    assert hour[("d1", "pm10", 3600, "max")].value == max(pm_hour)
    assert all(m.end == hour_end for m in hour.values())
    again = by_key(engine.close_period(3600, hour_end))  # already handed out
    assert again[("n1", "noise_la", 3600, "leq")].value is None
    with pytest.raises(ValueError):
        engine.close_period(3600, hour_end + timedelta(minutes=1))


def test_hour_blocks_follow_a_half_hour_time_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30
    engine = MeasureEngine("Asia/Kolkata")
    start = datetime(2024, 5, 1, 9, 0, tzinfo=kolkata)
    for i in range(3600):
        engine.add(noise(start + timedelta(seconds=i), 60.0))
    hour = by_key(engine.close_period(3600, datetime(2024, 5, 1, 10, 0, tzinfo=kolkata)))
    assert hour[("n1", "noise_la", 3600, "leq")].samples == 3600
    with pytest.raises(ValueError):
        engine.close_period(3600, datetime(2024, 5, 1, 5, 0, tzinfo=UTC))  # 10:30 local: not an hour end


def test_day_block_ld_ln_by_schedule() -> None:
    """Samples every 10 s over a local day; night 23:00-07:00 as in Shenzhen (DOMAIN.md §1)."""
    rng = random.Random(9)
    engine = MeasureEngine("Asia/Shanghai", night_windows=[("23:00", "07:00")])
    engine.set_sample_period("n1", 10.0)
    day_levels, night_levels, all_levels = [], [], []
    for i in range(0, 86400, 10):
        t = T0 + timedelta(seconds=i)
        local_hour = t.astimezone(SH).hour
        night = local_hour >= 23 or local_hour < 7
        v = round(rng.uniform(40, 55) if night else rng.uniform(55, 85), 1)
        (night_levels if night else day_levels).append(v)
        all_levels.append(v)
        engine.add(noise(t, v))
    engine.add(noise(T0 + timedelta(days=1, seconds=5), 60.0))  # next day starts
    day = by_key(engine.close_period(86400, T0 + timedelta(days=1)))
    ld, ln = day[("n1", "noise_la", 86400, "ld")], day[("n1", "noise_la", 86400, "ln")]
    assert ld.value == pytest.approx(ref_leq(day_levels), abs=1e-9) and ld.samples == len(day_levels) == 5760
    assert ln.value == pytest.approx(ref_leq(night_levels), abs=1e-9) and ln.samples == len(night_levels) == 2880
    assert ld.valid and ln.valid
    leq = day[("n1", "noise_la", 86400, "leq")]
    assert leq.value == pytest.approx(ref_leq(all_levels), abs=1e-9) and leq.samples == 8640 and leq.valid
    assert day[("n1", "noise_la", 86400, "l90")].value == ref_ln(all_levels, 90)
    assert all(m.end == T0 + timedelta(days=1) for m in day.values())


def test_late_reading_for_a_closed_block_is_dropped_and_counted() -> None:
    engine = MeasureEngine("Asia/Shanghai")
    for i in range(60):
        engine.add(noise(T0 + timedelta(seconds=i), 60.0))
    engine.close_period(60, T0 + timedelta(minutes=1))
    engine.add(noise(T0 + timedelta(seconds=30), 90.0))  # arrives after its minute was closed
    assert engine.stats()["late"] >= 1


def test_wind_direction_is_not_averaged() -> None:
    engine = MeasureEngine("Asia/Shanghai")
    engine.add(Reading("w1", "wind_direction", 350.0, "deg", T0))
    engine.add(Reading("w1", "wind_direction", 10.0, "deg", T0 + timedelta(seconds=1)))
    assert not [m for m in engine.rolling(T0 + timedelta(seconds=1)) if m.quantity == "wind_direction"]
    assert engine.stats()["skipped"] == 2


def test_memory_stays_bounded_over_a_day() -> None:
    """O(1) state per sensor: after a day of 1 s samples the shared ring holds about an hour."""
    engine = MeasureEngine("Asia/Shanghai")
    for i in range(86400):
        engine.add(noise(T0 + timedelta(seconds=i), 50.0 + (i % 400) / 10))
    series = engine._series[("n1", "noise_la")]
    assert series.ring.cap <= 8192
    assert len(series.closed[0]) <= 3  # unclaimed minute blocks are not hoarded
