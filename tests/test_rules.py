"""Rules and schedule: limits by period, hysteresis, minimum duration, cooldown, permits."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from drivers.types import Quality, Reading
from edge_agent.config.rules import DustRule, NoiseRule, RulesConfig, Timing
from edge_agent.config.schedule import Permit, ScheduleConfig, TimeWindow
from edge_agent.rules import RuleEngine, Schedule
from edge_agent.rules.engine import convert_dust
from edge_agent.types import Measure, Violation

SZ = ZoneInfo("Asia/Shanghai")


def local(h: int, m: int = 0, day: int = 23) -> datetime:
    return datetime(2026, 11, day, h, m, tzinfo=SZ).astimezone(timezone.utc)


def leq(value: float, window: int, at: datetime, sensor: str = "noise-1") -> Measure:
    return Measure(sensor, "noise_la", window, "leq", value, "dB(A)", at, samples=window)


def engine(rules: RulesConfig | None = None, schedule: ScheduleConfig | None = None) -> tuple[RuleEngine, list]:
    got: list[Violation] = []
    eng = RuleEngine(rules or RulesConfig(), Schedule(schedule or ScheduleConfig(), "Asia/Shanghai"), got.append)
    return eng, got


def only(violations: list[Violation], kind: str) -> list[tuple[str, str]]:
    return [(v.kind, v.state) for v in violations if v.kind == kind]


def test_schedule_shenzhen_defaults():
    s = Schedule(ScheduleConfig(), "Asia/Shanghai")
    assert s.period(local(23, 0)) == "night" and s.period(local(6, 59)) == "night"
    assert s.period(local(7, 0)) == "day" and s.period(local(22, 59)) == "day"
    assert s.restricted(local(12, 30)) and not s.is_night(local(12, 30))  # the noon break
    assert not s.restricted(local(14, 0))


def test_permit_suspends_night_work_only_in_its_dates_and_hours():
    cfg = ScheduleConfig(permits=[Permit(id="SZ-2026-001", valid_from=date(2026, 11, 23), valid_to=date(2026, 11, 23),
                                         windows=[TimeWindow(start="23:00", end="02:00")])])
    s = Schedule(cfg, "Asia/Shanghai")
    assert s.permit_for(local(23, 30), "night_work") is not None
    assert s.permit_for(local(3, 0), "night_work") is None  # outside its hours
    assert s.permit_for(local(23, 30, day=24), "night_work") is None  # outside its dates
    assert s.permit_for(local(23, 30), "noise_over_limit") is None  # it allows work, not noise


def test_noise_limit_depends_on_day_and_night():
    eng, got = engine()
    eng.evaluate(local(15), [leq(65, 1200, local(15))])
    assert only(got, "noise_over_limit") == []  # 65 < 70 by day
    eng.evaluate(local(23, 30), [leq(65, 1200, local(23, 30))])
    assert only(got, "noise_over_limit") == [("noise_over_limit", "started")]  # 65 > 55 at night
    v = next(v for v in got if v.kind == "noise_over_limit")
    assert v.figures["limit"] == 55 and v.figures["period"] == "night" and v.figures["leq"] == 65


def test_hysteresis_clear_time_and_cooldown():
    rules = RulesConfig(noise=NoiseRule(hysteresis_db=1.0, timing=Timing(min_duration_s=0, clear_s=60,
                                                                          cooldown_s=300, ongoing_every_s=600)))
    eng, got = engine(rules)
    t = local(15)

    def step(seconds: float, value: float) -> None:
        at = t + timedelta(seconds=seconds)
        eng.evaluate(at, [leq(value, 1200, at)])

    step(0, 71)  # over 70: started
    step(10, 69.5)  # in the band (69..70): still active, clear timer not started
    step(100, 69.5)
    assert only(got, "noise_over_limit") == [("noise_over_limit", "started")]
    step(110, 68.0)  # clearly below: clear timer starts
    step(169, 68.0)
    assert len(only(got, "noise_over_limit")) == 1
    step(171, 68.0)  # 61 s clear: ended
    assert only(got, "noise_over_limit")[-1] == ("noise_over_limit", "ended")
    step(200, 75)  # within the 300 s cooldown: no new start
    assert len(only(got, "noise_over_limit")) == 2
    step(480, 75)  # after cooldown: a new occurrence, with a new key
    assert only(got, "noise_over_limit")[-1] == ("noise_over_limit", "started")
    keys = [v.key for v in got if v.kind == "noise_over_limit"]
    assert keys[0] == keys[1] != keys[2]


def test_min_duration_and_ongoing():
    rules = RulesConfig(noise=NoiseRule(timing=Timing(min_duration_s=30, clear_s=10, ongoing_every_s=60)))
    eng, got = engine(rules)
    t = local(15)
    for s in range(0, 200, 5):
        at = t + timedelta(seconds=s)
        eng.evaluate(at, [leq(75, 1200, at)])
    states = [(v.state, (v.time - t).total_seconds()) for v in got if v.kind == "noise_over_limit"]
    assert states[0] == ("started", 30)
    assert states[0][0] == "started" and [s for s, _ in states[1:]] == ["ongoing", "ongoing"]
    assert got[0].started == t  # the occurrence began when the condition first held


def test_missing_figure_cannot_prove_a_breach():
    rules = RulesConfig(noise=NoiseRule(timing=Timing(clear_s=5)))
    eng, got = engine(rules)
    t = local(15)
    eng.evaluate(t, [leq(80, 1200, t)])
    eng.evaluate(t + timedelta(seconds=1), [])  # meter gone: no valid figure
    eng.evaluate(t + timedelta(seconds=7), [])
    assert only(got, "noise_over_limit") == [("noise_over_limit", "started"), ("noise_over_limit", "ended")]


def test_early_warning_within_margin():
    eng, got = engine()
    t = local(10)
    for s in range(0, 40, 5):
        at = t + timedelta(seconds=s)
        eng.evaluate(at, [leq(67.5, 300, at)])  # 70 - 3 = 67 -> warn (min duration 30 s)
    assert only(got, "noise_early_warning") == [("noise_early_warning", "started")]


def test_night_work_needs_restricted_hours_and_no_permit():
    rules = RulesConfig()
    eng, got = engine(rules)
    for base in (local(15), local(12, 10)):  # afternoon: fine; noon break: restricted
        for s in range(0, 301, 30):
            at = base + timedelta(seconds=s)
            eng.evaluate(at, [leq(58, 300, at)])
    assert only(got, "night_work") == [("night_work", "started")]
    assert got[-1].time == local(12, 15)  # 5 minutes of activity in the noon break

    permit = Permit(id="P1", valid_from=date(2026, 11, 1), valid_to=date(2026, 11, 30))
    eng2, got2 = engine(schedule=ScheduleConfig(permits=[permit]))
    for s in range(0, 601, 30):
        at = local(23, 10) + timedelta(seconds=s)
        eng2.evaluate(at, [leq(58, 300, at)])
    assert only(got2, "night_work") == []


def test_night_lmax_fires_on_the_reading_itself():
    eng, got = engine()
    quiet = Reading("noise-1", "noise_la", 60.0, "dB(A)", local(23, 30))
    loud = Reading("noise-1", "noise_la", 71.5, "dB(A)", local(23, 30) + timedelta(seconds=1))
    day_loud = Reading("noise-1", "noise_la", 90.0, "dB(A)", local(15))
    bad = Reading("noise-1", "noise_la", 99.0, "dB(A)", local(23, 31), Quality.OUT_OF_RANGE)
    eng.on_reading(day_loud)
    eng.on_reading(quiet)
    eng.on_reading(bad)
    assert got == []
    eng.on_reading(loud)  # 71.5 > 55 + 15
    assert only(got, "night_lmax") == [("night_lmax", "started")]
    assert got[0].figures["lmax"] == 71.5 and got[0].figures["limit"] == 70


def test_dust_units_are_converted():
    assert convert_dust(850, "ug/m3", "mg/m3") == 0.85
    assert convert_dust(0.85, "mg/m3", "ug/m3") == 850
    rules = RulesConfig(dust=DustRule(window_s=300, limit=0.8, unit="mg/m3"))
    eng, got = engine(rules)
    t = local(10)
    eng.evaluate(t, [Measure("dust-1", "tsp", 300, "avg", 790.0, "ug/m3", t, samples=300)])
    assert got == []
    eng.evaluate(t, [Measure("dust-1", "tsp", 300, "avg", 850.0, "ug/m3", t, samples=300)])
    assert only(got, "dust_over_limit") == [("dust_over_limit", "started")]
    assert got[0].figures["avg"] == 0.85



def test_a_permit_for_dust_suspends_the_dust_rules_in_its_hours_only():
    permit = Permit(id="SZ-2026-009", valid_from=date(2026, 11, 23), valid_to=date(2026, 11, 23),
                    windows=[TimeWindow(start="09:00", end="12:00")], allows=["dust_over_limit", "dust_early_warning"])
    rules = RulesConfig(dust=DustRule(window_s=300, limit=0.8, unit="mg/m3"))
    eng, got = engine(rules, ScheduleConfig(permits=[permit]))
    t = local(10)
    eng.evaluate(t, [Measure("dust-1", "tsp", 300, "avg", 950.0, "ug/m3", t, samples=300)])
    assert got == []  # demolition under a permit: no violation, no warning
    t = local(12, 30)
    eng.evaluate(t, [Measure("dust-1", "tsp", 300, "avg", 950.0, "ug/m3", t, samples=300)])
    assert only(got, "dust_over_limit") == [("dust_over_limit", "started")]
