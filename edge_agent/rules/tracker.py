"""One rule's state for one source: condition -> started -> ongoing ... -> ended -> cooldown.

Hysteresis keeps a level that hovers at the limit from flapping: a violation starts when
the condition holds for `min_duration_s`, and ends only when the value has been past the
hysteresis band for `clear_s`. Cooldown stops a new one from starting right after.
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
    pending_since: datetime | None = None
    clear_since: datetime | None = None
    started: datetime | None = None
    last_emit: datetime | None = None
    last_end: datetime | None = None
    key: str = ""

    def update(
        self, now: datetime, condition: Condition, figures: dict[str, Any], message: str = ""
    ) -> Violation | None:
        t = self.timing
        if not self.active:
            if condition is not Condition.OVER:
                self.pending_since = None
                return None
            if self.pending_since is None:
                self.pending_since = now
            if (now - self.pending_since).total_seconds() < t.min_duration_s:
                return None
            if self.last_end is not None and (now - self.last_end).total_seconds() < t.cooldown_s:
                return None
            self.active, self.started, self.clear_since = True, self.pending_since, None
            self.key = f"{self.kind}:{self.source}:{int(self.pending_since.timestamp())}"
            return self._emit("started", now, figures, message)
        if condition is Condition.CLEAR:
            if self.clear_since is None:
                self.clear_since = now
            if (now - self.clear_since).total_seconds() >= t.clear_s:
                self.active, self.pending_since, self.last_end = False, None, now
                return self._emit("ended", now, figures, message)
            return None
        self.clear_since = None
        if self.last_emit is not None and (now - self.last_emit).total_seconds() >= t.ongoing_every_s:
            return self._emit("ongoing", now, figures, message)
        return None

    def _emit(self, state: str, now: datetime, figures: dict[str, Any], message: str) -> Violation:
        self.last_emit = now
        assert self.started is not None
        return Violation(kind=self.kind, state=state, key=self.key, time=now, started=self.started,
                         source=self.source, figures=figures, message=message)
