"""One rule's state for one source: condition -> started -> ongoing ... -> ended -> cooldown.

Hysteresis keeps a level that hovers at the limit from flapping: a violation starts when
the condition holds for `min_duration_s`, and ends only when the value has been past the
hysteresis band for `clear_s`. Cooldown stops a new one from starting right after.

Durations are measured on `elapsed` (monotonic seconds from the caller's clock) when it is
given, so a wall-clock step neither completes nor prolongs them; the wall time `now` only
labels the states.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from edge_agent.config.rules import Timing
from edge_agent.types import Violation


class Condition(Enum):
    OVER = "over"  # the breach holds now
    BAND = "band"  # between the limit and the hysteresis line: no change
    CLEAR = "clear"  # clearly fine, or no valid figure to prove a breach


@dataclass
class Tracker:
    kind: str
    source: str
    timing: Timing
    active: bool = False
    pending_since: float | None = None  # elapsed seconds (see the module docstring)
    pending_wall: datetime | None = None
    clear_since: float | None = None
    started: datetime | None = None
    last_emit: float | None = None
    last_end: float | None = None
    key: str = ""

    def update(
        self, now: datetime, condition: Condition, figures: dict[str, Any], message: str = "",
        *, elapsed: float | None = None,
    ) -> Violation | None:
        t = self.timing
        mono = now.timestamp() if elapsed is None else elapsed
        if not self.active:
            if condition is not Condition.OVER:
                self.pending_since = self.pending_wall = None
                return None
            if self.pending_since is None:
                self.pending_since, self.pending_wall = mono, now
            if mono - self.pending_since < t.min_duration_s:
                return None
            if self.last_end is not None and mono - self.last_end < t.cooldown_s:
                return None
            assert self.pending_wall is not None
            self.active, self.started, self.clear_since = True, self.pending_wall, None
            self.key = f"{self.kind}:{self.source}:{int(self.pending_wall.timestamp())}"
            return self._emit("started", now, mono, figures, message)
        if condition is Condition.CLEAR:
            if self.clear_since is None:
                self.clear_since = mono
            if mono - self.clear_since >= t.clear_s:
                self.active, self.pending_since, self.pending_wall, self.last_end = False, None, None, mono
                return self._emit("ended", now, mono, figures, message)
            return None
        self.clear_since = None
        if self.last_emit is not None and mono - self.last_emit >= t.ongoing_every_s:
            return self._emit("ongoing", now, mono, figures, message)
        return None

    def _emit(self, state: str, now: datetime, mono: float, figures: dict[str, Any], message: str) -> Violation:
        self.last_emit = mono
        assert self.started is not None
        return Violation(kind=self.kind, state=state, key=self.key, time=now, started=self.started,
                         source=self.source, figures=figures, message=message)
