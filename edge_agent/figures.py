"""The core's one-second clock for figures: rules on rolling windows, and the closing of blocks.

Every second the rolling figures go to the rules. At each local minute, hour and day
boundary the block of figures is closed exactly once (the engine hands each block out once)
and fanned out to every listener: the minute telemetry, the HJ 212 uplink. Meter health
becomes `device_fault` violations here too, since a dead meter is a rule breach of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.config.rules import Timing
from edge_agent.measures import MeasureEngine
from edge_agent.rules import RuleEngine
from edge_agent.rules.tracker import Condition, Tracker
from edge_agent.types import Measure, Violation

log = logging.getLogger(__name__)

PeriodListener = Callable[[int, datetime, list[Measure]], object]
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


class FiguresService:
    name = "figures"

    def __init__(self, engine: MeasureEngine, rules: RuleEngine, timezone_name: str, *,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 device_health: HealthSource | None = None):
        self.engine = engine
        self.rules = rules
        self.tz = ZoneInfo(timezone_name)
        self.now = now
        self.device_health = device_health
        self.listeners: list[PeriodListener] = []
        self._blocks: dict[tuple[int, datetime], list[Measure]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._device_trackers: dict[str, Tracker] = {}
        self.evaluations = 0
        self.last_error = ""

    def on_period(self, listener: PeriodListener) -> None:
        self.listeners.append(listener)

    # --- component ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="figures", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def health(self) -> dict[str, Any]:
        return {"state": "degraded" if self.last_error else "ok", "evaluations": self.evaluations,
                "last_error": self.last_error, **self.engine.stats()}

    # --- the clock ---------------------------------------------------------------------------

    def _loop(self) -> None:
        prev = self.now()
        while not self._stop.is_set():
            now = self.now()
            try:
                self.tick(prev, now)
                self.last_error = ""
            except Exception as exc:  # a bad figure must not stop the rules for good
                self.last_error = str(exc)
                log.exception("figures: %s", exc)
            prev = now
            # Wake just after the next whole second, so block ends are seen promptly.
            self._stop.wait(max(0.05, 1.0 - (self.now().timestamp() % 1.0) + 0.01))

    def tick(self, prev: datetime, now: datetime) -> None:
        """One evaluation: blocks that ended since `prev`, then the rules at `now`."""
        for period, end in _boundaries(prev, now, self.tz):
            measures = self.engine.close_period(period, end)
            with self._cond:
                self._blocks[(period, end)] = measures
                for key in [k for k in self._blocks if k[1] < end - timedelta(hours=25)]:
                    del self._blocks[key]
                self._cond.notify_all()
            for listener in self.listeners:
                try:
                    listener(period, end, measures)
                except Exception:
                    log.exception("figures listener failed for the %d s block ending %s", period, end)
        self.rules.evaluate(now, self.engine.rolling(now))
        self._device_faults(now)
        self.evaluations += 1

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
            violation = tracker.update(now, condition, figures, f"device {device} is {state}")
            if violation is not None:
                self._emit(violation)

    def _emit(self, violation: Violation) -> None:
        for sink in self.rules.sinks:
            try:
                sink(violation)
            except Exception:
                log.exception("violation consumer failed for %s", violation.kind)
