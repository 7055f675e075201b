"""The core's once-a-second work on figures: rules on rolling windows, and the closing of blocks.

The core thread (edge_agent/core.py) calls `tick` every second. The rolling figures go to
the rules. At each local minute, hour and day boundary the block of figures is closed
exactly once (the engine hands each block out once) and passed to `on_block` (the minute
telemetry, the HJ 212 uplink). Meter health becomes `device_fault` violations here too,
since a dead meter is a rule breach of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.config.rules import Timing
from edge_agent.measures.engine import MeasureEngine
from edge_agent.rules.engine import RuleEngine, ViolationSink, wall_seconds
from edge_agent.rules.tracker import Condition, Tracker
from edge_agent.types import Measure

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ClosedBlock:
    """The figures of one local minute, hour or day, handed out once when it ends."""

    period_s: int  # 60, 3600 or 86400
    end: datetime  # UTC
    measures: list[Measure]


BlockListener = Callable[[ClosedBlock], object]
HealthSource = Callable[[], Mapping[str, Mapping[str, Any]]]

# A meter must be down this long before it is a violation: one missed poll is not a fault.
DEVICE_FAULT_TIMING = Timing(min_duration_s=60, clear_s=10, cooldown_s=0, ongoing_every_s=3600)


def _boundaries(prev: datetime, now: datetime, tz: ZoneInfo) -> list[tuple[int, datetime]]:
    """The (period, end) of every minute/hour/local-day block that ended in (prev, now]."""
    out: list[tuple[int, datetime]] = []
    t = prev.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= now:
        out.append((60, t))
        local = t.astimezone(tz)
        if local.minute == 0:
            out.append((3600, t))
            if local.hour == 0:
                out.append((86400, t))
        t += timedelta(minutes=1)
    return out


class Figures:
    """Rolling figures to the rules, closed blocks to their listeners, meter faults to `report`."""

    def __init__(self, engine: MeasureEngine, rules: RuleEngine, timezone_name: str, *,
                 on_block: BlockListener, report: ViolationSink,
                 elapsed: Callable[[datetime], float] = wall_seconds,
                 device_health: HealthSource | None = None):
        self.engine = engine
        self.rules = rules
        self.tz = ZoneInfo(timezone_name)
        self.on_block = on_block
        self.report = report
        self.elapsed = elapsed
        self.device_health = device_health
        self._blocks: dict[tuple[int, datetime], list[Measure]] = {}
        self._cond = threading.Condition()
        self._device_trackers: dict[str, Tracker] = {}
        self.evaluations = 0

    def stats(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, **self.engine.stats()}

    def tick(self, prev: datetime, now: datetime) -> None:
        """One evaluation: blocks that ended since `prev`, then the rules at `now`."""
        for period, end in _boundaries(prev, now, self.tz):
            self._close(period, end)
        self.rules.evaluate(now, self.engine.rolling(now))
        self._device_faults(now)
        self.evaluations += 1

    def clock_stepped(self, prev: datetime, now: datetime) -> None:
        """The wall clock jumped from `prev` to `now`. Forward: each period's block that held `prev`
        is closed once, partial (no replay of every minute in between, no figures for time the
        box was not measuring). Back: nothing to close; new blocks start from `now`."""
        if now <= prev:
            return
        for period in (60, 3600, 86400):
            _start, end_ts = self.engine.calendar.block_bounds(period, prev.timestamp())
            end = datetime.fromtimestamp(end_ts, prev.tzinfo)
            if end <= now:
                self._close(period, end)

    def _close(self, period: int, end: datetime) -> None:
        measures = self.engine.close_period(period, end)
        with self._cond:
            self._blocks[(period, end)] = measures
            for key in [k for k in self._blocks if k[1] < end - timedelta(hours=25)]:
                del self._blocks[key]
            self._cond.notify_all()
        self.on_block(ClosedBlock(period, end, measures))

    def block(self, period: int, end: datetime, wait_s: float = 0.0) -> list[Measure] | None:
        """The figures of a closed block, waiting up to `wait_s` for it to close."""
        with self._cond:
            self._cond.wait_for(lambda: (period, end) in self._blocks, timeout=wait_s)
            return self._blocks.get((period, end))

    def telemetry(self, end: datetime, interval_s: int) -> dict[str, Any]:
        """What the minute message carries: the closed minute block, or rolling figures."""
        if interval_s == 60:
            block = self.block(60, end, wait_s=2.0)
            if block is not None:
                return {"measures": [m.to_json() for m in block], "figures": "block"}
        window = [m for m in self.engine.rolling(end) if m.window_s == 60]
        return {"measures": [m.to_json() for m in window], "figures": "rolling"}

    def _device_faults(self, now: datetime) -> None:
        if self.device_health is None:
            return
        for device, health in self.device_health().items():
            state = str(health.get("state", "ok"))
            condition = Condition.OVER if state == "down" else Condition.CLEAR
            tracker = self._device_trackers.get(device)
            if tracker is None:
                if condition is not Condition.OVER:
                    continue
                tracker = self._device_trackers[device] = Tracker("device_fault", device, DEVICE_FAULT_TIMING)
            figures = {"state": state, "last_error": str(health.get("last_error", ""))[:200]}
            violation = tracker.update(now, condition, figures, f"device {device} is {state}",
                                       elapsed=self.elapsed(now))
            if violation is not None:
                self.report(violation)
