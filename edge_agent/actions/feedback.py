"""Whether a relay's load really runs: its feedback input against what it was commanded.

A relay can click while nothing happens: a pump without water or power, a tripped motor
breaker, a burnt coil, a welded contact. With a feedback input (config `relays[].feedback`)
the box compares what it commanded (`expected`) with what the input says (`seen`); when they
disagree for `confirm_s` that is a `device_fault` with source `relay:ID` (figures: reason
`ID not running` or `ID running while off`), reported through the violation path like every
other violation (event, evidence), and ended as soon as they agree again: the feedback
came, or the relay was switched off. While it lasts an `ongoing` follows every hour.

Only the relay timing thread calls `check`; `health` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from edge_agent.clock import SYSTEM_CLOCK, Clock
from edge_agent.config.actions import RelayFeedbackConfig
from edge_agent.types import Violation

log = logging.getLogger(__name__)

KIND = "device_fault"
ONGOING_EVERY_S = 3600.0  # as the meters' device faults (edge_agent/measures/figures.py)

NOT_RUNNING = "not running"
RUNNING_WHILE_OFF = "running while off"


class FeedbackSource(Protocol):
    """What the monitor needs of a feedback input (`drivers.relay.FeedbackInput`)."""

    def read(self) -> bool | None: ...

    def health(self) -> dict[str, object]: ...


class FeedbackMonitor:
    """Compares one relay's command with its feedback; `check` returns the fault's state changes."""

    def __init__(self, relay_id: str, source: FeedbackSource, cfg: RelayFeedbackConfig, *,
                 clock: Clock = SYSTEM_CLOCK):
        self.relay_id = relay_id
        self.source = source
        self.cfg = cfg
        self.clock = clock
        self.source_id = f"relay:{relay_id}"
        self._lock = threading.Lock()
        self._expected: bool | None = None
        self._seen: bool | None = None
        self._mismatch: str | None = None  # NOT_RUNNING / RUNNING_WHILE_OFF while they disagree
        self._mismatch_mono = 0.0
        self._mismatch_wall: datetime | None = None
        self._fault: Violation | None = None  # the open fault (its last state change)
        self._last_emit = 0.0
        self._last_key = ""
        self.faults = 0

    def check(self, expected: bool) -> tuple[list[Violation], float | None]:
        """Judge now: the violations to report (outside any lock), and in how many seconds to look again."""
        seen = self.source.read()
        mono = self.clock.monotonic()
        out: list[Violation] = []
        with self._lock:
            self._expected = expected
            self._seen = seen
            if seen is None:  # cannot read the input: nothing can be judged, the fault stays as it is
                return out, None
            if seen == expected or (not expected and not self.cfg.watch_off):
                mismatch = None
            else:
                mismatch = NOT_RUNNING if expected else RUNNING_WHILE_OFF
            if mismatch != self._mismatch:
                self._mismatch = mismatch
                self._mismatch_mono = mono
                self._mismatch_wall = self.clock.now()
            fault = self._fault
            if fault is not None and fault.figures.get("reason") != self._reason(mismatch):
                because = ("relay_off" if not expected else "feedback_returned") if fault.figures.get(
                    "expected") == "on" else ("relay_on" if expected else "feedback_stopped")
                out.append(self._emit("ended", fault, mono, ended_because=because))
                fault = None
            if mismatch is None:
                return out, None
            due = self._mismatch_mono + self.cfg.confirm_s
            if fault is None:
                if mono < due:
                    return out, due - mono
                out.append(self._start(mismatch, mono))
            elif mono - self._last_emit >= ONGOING_EVERY_S:
                out.append(self._emit("ongoing", fault, mono))
            return out, self._last_emit + ONGOING_EVERY_S - mono

    def _reason(self, mismatch: str | None) -> str | None:
        return None if mismatch is None else f"{self.relay_id} {mismatch}"

    def _start(self, mismatch: str, mono: float) -> Violation:
        started = self._mismatch_wall or self.clock.now()
        key = f"{KIND}:{self.source_id}:{int(started.timestamp())}"
        if key == self._last_key:  # two faults within one second: keys must still differ
            key = f"{key}.{started.microsecond // 1000:03d}"
        self._last_key = key
        template = self.cfg.message if mismatch == NOT_RUNNING else self.cfg.message_off
        message = template.replace("{relay}", self.relay_id).replace("{confirm_s}", f"{self.cfg.confirm_s:g}")
        figures: dict[str, float | str | None] = {
            "reason": self._reason(mismatch),
            "relay": self.relay_id,
            "expected": "on" if mismatch == NOT_RUNNING else "off",
            "seen": "off" if mismatch == NOT_RUNNING else "on",
            "confirm_s": self.cfg.confirm_s,
            "pin": str(self.cfg.pin),
        }
        self.faults += 1
        fault = Violation(kind=KIND, state="started", key=key, time=self.clock.now(),
                          started=started, source=self.source_id, figures=figures, message=message)
        self._fault = fault
        self._last_emit = mono
        log.warning("relay %s: %s", self.relay_id, message)
        return fault

    def _emit(self, state: str, fault: Violation, mono: float, ended_because: str = "") -> Violation:
        figures = dict(fault.figures)
        if ended_because:
            figures["ended_because"] = ended_because
        change = Violation(kind=KIND, state=state, key=fault.key, time=self.clock.now(), started=fault.started,
                           source=fault.source, figures=figures, message=fault.message)
        self._last_emit = mono
        self._fault = None if state == "ended" else change
        if state == "ended":
            log.info("relay %s: feedback fault over (%s)", self.relay_id, ended_because)
        return change

    def health(self) -> Mapping[str, object]:
        source = self.source.health()
        with self._lock:
            fault = self._fault
            state = "fault" if fault is not None else str(source.get("state", "ok"))
            return {
                "state": state,
                "pin": self.cfg.pin,
                "expected": self._expected,
                "seen": self._seen,
                "agree": None if self._seen is None or self._expected is None else self._mismatch is None,
                "last_change": source.get("last_change"),
                "changes": source.get("changes"),
                "confirm_s": self.cfg.confirm_s,
                "fault": None if fault is None else fault.figures.get("reason"),
                "fault_key": None if fault is None else fault.key,
                "faults": self.faults,
                "last_error": source.get("last_error"),
            }
