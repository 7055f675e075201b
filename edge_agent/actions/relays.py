"""When a relay is on: held by violations (auto), overridden by hand, bounded by timing limits.

Why the limits: a stuck sensor or a violation that never ends must not run a pump dry or a
strobe for a day (`max_on_s`: after that long on, the relay goes off and stays off until
the demand ends or a new violation/override asks again), and pumps must not be cycled
faster than they tolerate (`min_off_s`: after switching off, the relay stays off at least
that long; a demand in the meantime is served when it has passed). A manual override (the
bureau's `spray` command, a technician) beats the violations for its duration; `max_on_s`
still applies to it. At shutdown every relay goes off, whatever the limits say.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class Switch(Protocol):
    """What the controller needs of a relay driver (`drivers.relay.Relay`)."""

    name: str

    def set(self, on: bool) -> bool: ...

    def health(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class Override:
    """A manual state until `until` (monotonic seconds; None: until cleared)."""

    on: bool
    until: float | None


class RelayController:
    """The policy for one relay. Thread-safe; call `tick()` again by the time it returns."""

    def __init__(self, switch: Switch, *, max_on_s: float, min_off_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.switch = switch
        self.max_on_s = max_on_s
        self.min_off_s = min_off_s
        self.clock = clock
        self._lock = threading.RLock()
        self._holders: set[str] = set()
        self._override: Override | None = None
        self._on = False
        self._on_since = 0.0
        self._off_since = float("-inf")  # never switched: no rest owed
        self._cut_off = False  # max_on_s tripped for the current demand
        self._cutoffs = 0

    @property
    def name(self) -> str:
        return self.switch.name

    @property
    def is_on(self) -> bool:
        return self._on

    # --- demand ----------------------------------------------------------------------------

    def hold(self, key: str) -> None:
        """A violation wants the relay on; a new holder re-arms a tripped cut-off."""
        with self._lock:
            if key not in self._holders:
                self._holders.add(key)
                self._cut_off = False
            self.tick()

    def release(self, key: str) -> None:
        with self._lock:
            self._holders.discard(key)
            self.tick()

    def override(self, on: bool | None, duration_s: float | None = None) -> None:
        """Force on/off for `duration_s` (None: until cleared); `on=None` returns to auto."""
        with self._lock:
            if on is None:
                self._override = None
            else:
                until = None if duration_s is None else self.clock() + duration_s
                self._override = Override(on, until)
                if on:
                    self._cut_off = False
            self.tick()

    def all_off(self) -> None:
        """Shutdown: off now, demands and overrides forgotten."""
        with self._lock:
            self._holders.clear()
            self._override = None
            self._set(False, self.clock())

    # --- policy ----------------------------------------------------------------------------

    def tick(self) -> float | None:
        """Apply the policy now; returns the monotonic time of the next timed decision, if any."""
        with self._lock:
            now = self.clock()
            deadlines: list[float] = []
            until = None if self._override is None else self._override.until
            if until is not None:
                if now >= until:
                    self._override = None
                else:
                    deadlines.append(until)
            want = self._override.on if self._override is not None else bool(self._holders)
            if not want:
                self._cut_off = False
            if self._on:
                if not want:
                    self._set(False, now)
                elif now - self._on_since >= self.max_on_s:
                    log.warning("relay %s: on for %.0f s, the most allowed (max_on_s): switched off",
                                self.name, now - self._on_since)
                    self._cutoffs += 1
                    self._cut_off = True
                    if self._override is not None and self._override.on:
                        self._override = None
                    self._set(False, now)
                else:
                    deadlines.append(self._on_since + self.max_on_s)
            elif want and not self._cut_off:
                ready = self._off_since + self.min_off_s
                if now >= ready:
                    self._set(True, now)
                    deadlines.append(now + self.max_on_s)
                else:
                    deadlines.append(ready)
            return min(deadlines) if deadlines else None

    def _set(self, on: bool, now: float) -> None:
        if on == self._on:
            self.switch.set(on)  # re-assert: harmless, and heals a pin that failed to claim
            return
        self.switch.set(on)
        self._on = on
        if on:
            self._on_since = now
        else:
            self._off_since = now
        log.info("relay %s %s", self.name, "on" if on else "off")

    def command_state(self) -> dict[str, object]:
        """What a command's ack says: on now or not, the mode, and what the protection does to it
        (`resting_s`: seconds of the `min_off_s` rest left before it switches on; `max_on_s`)."""
        with self._lock:
            now = self.clock()
            mode = "auto" if self._override is None else ("on" if self._override.on else "off")
            state: dict[str, object] = {"on": self._on, "mode": mode, "max_on_s": self.max_on_s}
            if self._override is not None and self._override.on and not self._on:
                state["resting_s"] = round(max(0.0, self._off_since + self.min_off_s - now), 1)
            return state

    def health(self) -> dict[str, object]:
        with self._lock:
            mode = "auto" if self._override is None else ("on" if self._override.on else "off")
            return {
                **self.switch.health(),
                "on": self._on,
                "mode": mode,
                "held_by": sorted(self._holders),
                "cut_off": self._cut_off,
                "cutoffs": self._cutoffs,
            }
