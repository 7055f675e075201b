"""Wall-clock steps (NTP correcting a box with no battery clock) neither stall nor flood the box.

Durations run on monotonic time; a step is recorded (status, evidence), the rolling figures are
relabelled, and a big step forward closes at most one partial block per period.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent_config import BASE, write_config
from broker import Broker, Recorder
from serial_helpers import socat_pair

from drivers.modbus.profile import load_profile
from drivers.types import Reading
from edge_agent.clock import ClockSteps, SkippingClock
from edge_agent.config import load_config
from edge_agent.config.rules import RulesConfig
from edge_agent.config.schedule import ScheduleConfig
from edge_agent.core import Core, ReadingQueue
from edge_agent.daemon import build_agent
from edge_agent.measures import MeasureEngine
from edge_agent.measures.figures import ClosedBlock, Figures
from edge_agent.rules import RuleEngine, Schedule
from edge_agent.types import Violation
from firmware_tools.simulator import ConstantSource, SimMeter, Simulator


def wait_until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


class Core_:
    """A core on its own thread, fed a reading a second by a feeder thread using the same clock."""

    def __init__(self, clock: SkippingClock):
        self.clock = clock
        self.engine = MeasureEngine("Asia/Shanghai", validity=0.5)
        self.blocks: list[ClosedBlock] = []
        self.violations: list[Violation] = []
        rules = RuleEngine(RulesConfig(), Schedule(ScheduleConfig(), "Asia/Shanghai"), self.violations.append,
                           lambda now: clock.monotonic())
        self.figures = Figures(self.engine, rules, "Asia/Shanghai", on_block=self.blocks.append,
                               report=self.violations.append, elapsed=lambda now: clock.monotonic())
        self.steps = ClockSteps()
        self.queue = ReadingQueue()
        self.core = Core(self.engine, self.figures, lambda r: None, clock, self.queue, self.steps)

    def feed(self, n: int, value: float = 50.0) -> None:
        for _ in range(n):
            self.queue.submit(Reading("noise-1", "noise_la", value, "dB(A)", self.clock.now()))
            time.sleep(0.01)


def test_a_30_day_step_forward_closes_one_partial_block_per_period_and_keeps_the_windows():
    clock = SkippingClock()
    c = Core_(clock)
    c.core.start()
    try:
        c.feed(30)
        assert wait_until(lambda: c.core.handled >= 30, 5)
        before = len(c.blocks)
        clock.step_wall(30 * 86400)
        t0 = time.monotonic()
        assert wait_until(lambda: c.steps.count == 1, 5), "the step was not noticed"
        assert time.monotonic() - t0 < 3
        closed = c.blocks[before:]
        assert 1 <= len(closed) <= 3 and len({b.period_s for b in closed}) == len(closed)  # not 43,200 minutes
        step = c.steps.status()["last_step"]
        assert abs(step["seconds"] - 30 * 86400) < 5  # type: ignore[index]
        # The samples of the last seconds still count in the rolling windows, under the new labels.
        leq60 = next(m for m in c.engine.rolling(clock.now()) if m.window_s == 60 and m.figure == "leq")
        assert leq60.samples == 30 and leq60.value is not None
    finally:
        c.core.stop()


def test_a_step_back_does_not_stall_blocks_or_telemetry(mosquitto: Broker, tmp_path: Path):
    clock = SkippingClock()
    with socat_pair(tmp_path) as pty:
        sim = Simulator(pty.meter, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(50.0))]).start()
        config = load_config(write_config(tmp_path, mosquitto.port,
                                          meters=[{"id": "noise-1", "port": pty.agent,
                                                   "profile": "renke_rs_zs_n01", "poll_interval_s": 0.5}]))
        bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
        parts = build_agent(config, clock=clock)
        parts.start()
        try:
            clock.skip(61 - clock.now().timestamp() % 60)  # to just past a minute boundary: one telemetry
            assert bureau.wait_for(lambda: bureau.payloads("telemetry"), 10)
            sent = len(bureau.payloads("telemetry"))
            clock.step_wall(-3600)  # NTP says we were an hour ahead
            assert wait_until(lambda: parts.core.steps.count == 1, 5)
            # Within two minutes of the corrected clock the minutes go out again (not an hour later).
            for _ in range(2):
                time.sleep(1.5)
                clock.skip(61)
            assert bureau.wait_for(lambda: len(bureau.payloads("telemetry")) > sent, 10), \
                "no telemetry after the step back"
            latest = bureau.payloads("telemetry")[-1]
            assert latest["measures"], "the minute after the step carries no figures"
            status = parts.agent.status_payload()
            assert status["clock"]["steps"] == 1 and status["clock"]["last_step"]["seconds"] < -3500
        finally:
            parts.stop(timeout=2)
            bureau.stop()
            sim.stop()


def test_a_step_forward_does_not_meet_a_minimum_duration():
    clock = SkippingClock()
    got: list[Violation] = []
    rules = RulesConfig.model_validate({"noise": {"window_s": 60, "timing": {"min_duration_s": 1800}}})
    schedule = Schedule(ScheduleConfig.model_validate({"night": [{"start": "00:00", "end": "00:00"}],
                                                       "quiet": []}), "Asia/Shanghai")
    eng = RuleEngine(rules, schedule, got.append, lambda now: clock.monotonic())
    from edge_agent.types import Measure

    def loud() -> list[Measure]:
        now = clock.now()
        return [Measure("noise-1", "noise_la", 60, "leq", 75.0, "dB(A)", now, samples=60)]

    eng.evaluate(clock.now(), loud())
    clock.step_wall(3600)  # an hour "passes" on the wall clock in no time
    eng.evaluate(clock.now(), loud())
    assert got == [], "a wall-clock step completed a 30-min minimum duration"
    clock.skip(1801)  # real (monotonic) time passes
    eng.evaluate(clock.now(), loud())
    assert [v.state for v in got] == ["started"]


def test_evidence_after_a_step_names_it(tmp_path: Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.clock import ClockStep
    from edge_agent.evidence.bundle import EvidenceFile, EvidenceStore
    from edge_agent.security.keys import Signer

    steps = ClockSteps()
    store = EvidenceStore(tmp_path, Signer(Ed25519PrivateKey.generate()), "s", "d", clock_steps=steps.take_unreported)
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    steps.record(ClockStep(-3600.0, now, now - timedelta(hours=1)))
    first = store.create([EvidenceFile("a.txt", b"a")])
    second = store.create([EvidenceFile("b.txt", b"b")])
    assert first.manifest["clock_steps"][0]["seconds"] == -3600.0
    assert "clock_steps" not in second.manifest  # told once, in the next bundle
