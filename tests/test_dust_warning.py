"""Dust early warning (扬尘预警): a shorter mean at a share of the limit announces it and starts the
spray before the limit's mean is crossed, as the noise early warning does for noise."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent_config import write_config

from drivers.types import Reading
from edge_agent.clock import SkippingClock
from edge_agent.config import load_checked
from edge_agent.config.actions import DEFAULT_ACTIONS, DEFAULT_CLIPS
from edge_agent.config.rules import DustEarlyWarningRule, DustRule, RulesConfig, Timing
from edge_agent.config.schedule import ScheduleConfig
from edge_agent.daemon import build_agent
from edge_agent.loopback import free_port
from edge_agent.measures import MeasureEngine
from edge_agent.rules import RuleEngine, Schedule
from edge_agent.types import Violation

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shenzhen


def episode(s: int) -> float:
    """PM10 in µg/m³: an hour at 40, a rise of 1 µg/m³ a minute to 100, an hour there, then 30."""
    if s < 3600:
        return 40.0
    if s < 7200:
        return 40.0 + (s - 3600) / 60.0
    return 100.0 if s < 10800 else 30.0


def run_episode(rules: RulesConfig, seconds: int = 4 * 3600) -> tuple[list[Violation], dict[datetime, float]]:
    """The episode through the real measures and rules, one sample and one evaluation a second."""
    measures = MeasureEngine(timezone="Asia/Shanghai")
    got: list[Violation] = []
    rules_engine = RuleEngine(rules, Schedule(ScheduleConfig(), "Asia/Shanghai"), got.append)
    values: dict[datetime, float] = {}
    for s in range(seconds):
        t = T0 + timedelta(seconds=s)
        values[t] = episode(s)
        measures.add(Reading("dust-1", "pm10", values[t], "ug/m3", t))
        rules_engine.evaluate(t, measures.rolling(t))
    return got, values


PM10_HEBEI = DustRule(quantity="pm10", window_s=3600, limit=80, unit="ug/m3", hysteresis=5,
                      timing=Timing(min_duration_s=0, clear_s=120))


def test_dust_early_warning_comes_before_the_limit_is_crossed():
    got, values = run_episode(RulesConfig(dust=PM10_HEBEI))  # the early warning with its defaults
    states = [(v.kind, v.state) for v in got if v.state != "ongoing"]
    assert states == [("dust_early_warning", "started"), ("dust_over_limit", "started"),
                      ("dust_early_warning", "ended"), ("dust_over_limit", "ended")], states
    warning = next(v for v in got if v.kind == "dust_early_warning")
    limit = next(v for v in got if v.kind == "dust_over_limit")
    # Warned well before the 1-h mean crossed 80, while no single reading had reached 80 yet.
    assert limit.started - warning.started > timedelta(minutes=20)
    assert max(v for t, v in values.items() if t <= warning.started) < 80
    assert warning.figures["warn_at"] == 64.0 and warning.figures["limit"] == 80
    assert warning.figures["window_s"] == 900 and warning.figures["quantity"] == "pm10"
    assert isinstance(warning.figures["avg"], float) and 64.0 < warning.figures["avg"] < 80.0
    assert "near the limit" in warning.message


def test_dust_early_warning_can_be_turned_off_and_has_its_own_timing():
    off = RulesConfig(dust=PM10_HEBEI, dust_early_warning=DustEarlyWarningRule(enabled=False))
    got, _ = run_episode(off, seconds=9000)
    assert {v.kind for v in got} == {"dust_over_limit"}
    # A smaller margin warns later, still before the limit.
    late = RulesConfig(dust=PM10_HEBEI, dust_early_warning=DustEarlyWarningRule(margin_share=0.05))
    got, _ = run_episode(late, seconds=9000)
    warning = next(v for v in got if v.kind == "dust_early_warning")
    assert warning.figures["warn_at"] == 76.0
    assert warning.started < next(v.started for v in got if v.kind == "dust_over_limit")


def test_dust_early_warning_announces_and_sprays_by_default():
    action = DEFAULT_ACTIONS["dust_early_warning"]
    assert action.clip == "dust_warning" and action.relays == ["spray"] and action.priority == "early_warning"
    clip = DEFAULT_CLIPS["dust_warning"]
    assert "扬尘预警" in clip.text and "喷淋" in clip.text
    assert clip.tts_text is not None and "yang2 chen2 yu4 jing3" in clip.tts_text


def test_through_the_daemon_the_spray_starts_on_the_warning_before_the_limit(tmp_path: Path, pins):
    """The wired box: readings into the core, the rules, the violation path, the relays on mock GPIO."""
    config = write_config(
        tmp_path, free_port(),  # no broker: events wait in the outbox
        relays=[{"id": "spray", "pin": 17}, {"id": "strobe", "pin": 27}],
        rules={"dust": {"quantity": "pm10", "window_s": 300, "limit": 80, "unit": "ug/m3", "hysteresis": 5,
                        "timing": {"min_duration_s": 0, "clear_s": 60}},
               "dust_early_warning": {"window_s": 60, "margin_share": 0.2,
                                      "timing": {"min_duration_s": 0, "clear_s": 60}}},
    )
    clock = SkippingClock()
    parts = build_agent(load_checked(config).config, clock=clock)
    parts.start()

    def events() -> list[tuple[str, str]]:
        return [(json.loads(m.payload)["kind"], json.loads(m.payload)["state"])
                for m in parts.agent.outbox.pending(1000) if m.topic == "event"]

    def feed(start: int, stop: int) -> None:
        for s in range(start, stop):  # 40 µg/m³ rising 0.2 a second: one reading, one second
            parts.core.readings.submit(Reading("dust-1", "pm10", 40.0 + 0.2 * s, "ug/m3", clock.now()))
            clock.skip(1.0)
            time.sleep(0.004)

    def wait_for(kind: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (kind, "started") in events():
                return True
            time.sleep(0.05)
        return False

    try:
        feed(0, 200)  # the 1-min mean passes 64 near s = 150; the last reading is 80 at s = 200
        assert wait_for("dust_early_warning"), events()
        assert ("dust_over_limit", "started") not in events()
        assert pins.pin(17).state is True, "the spray did not start on the early warning"
        assert pins.pin(27).state is False  # the strobe is for the violation
        feed(200, 420)  # the 5-min mean passes 80 near s = 350
        assert wait_for("dust_over_limit"), events()
        assert pins.pin(27).state is True and pins.pin(17).state is True
        order = [e for e in events() if e[1] == "started"]
        assert order.index(("dust_early_warning", "started")) < order.index(("dust_over_limit", "started"))
    finally:
        parts.stop(timeout=1)
