"""A relay output (spray cannon pump, strobe light) on one GPIO pin, and the input that
confirms it works (a flow switch, a pump current relay, a door contact), through gpiozero.

The pin factory is gpiozero's default choice, which honours `GPIOZERO_PIN_FACTORY`
(`lgpio` on a Pi 5, `rpigpio`/`lgpio` on older Pis, `mock` in tests). A pin that cannot
be claimed (no GPIO chip, pin busy, bad name) does not raise: the relay reports `down`,
every switch is tried again (so a transient failure heals), and the rest of the box runs.

Caveat for active-low relay boards: after `close()` the pin is released to an input, and
whether the relay then stays off depends on the board's pull-up. `close()` switches it off
first, so at least the last driven level is "off".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Relay:
    """One relay. Thread-safe; `set()` returns whether the pin now holds the asked level."""

    def __init__(self, name: str, pin: int | str, *, active_high: bool = True, pin_factory: Any = None):
        self.name = name
        self.pin = pin
        self.active_high = active_high
        self.pin_factory = pin_factory
        self._device: Any = None
        self._lock = threading.Lock()
        self._on = False
        self._switches = 0
        self._last_change: float | None = None
        self._last_error: str | None = None

    def open(self) -> bool:
        """Claim the pin, driven to "off" from the first instant."""
        with self._lock:
            return self._open_locked()

    def _open_locked(self) -> bool:
        if self._device is not None:
            return True
        try:
            from gpiozero import OutputDevice

            self._device = OutputDevice(self.pin, active_high=self.active_high, initial_value=False,
                                        pin_factory=self.pin_factory)
        except Exception as exc:  # BadPinFactory, PinInvalidPin, GPIOPinInUse, ImportError, OSError...
            error = f"relay {self.name} on pin {self.pin!r}: cannot claim the pin: {exc}"
            if error != self._last_error:
                log.error("%s", error)
            self._last_error = error
            return False
        self._on = False
        self._last_error = None
        log.info("relay %s on pin %r (active %s)", self.name, self.pin, "high" if self.active_high else "low")
        return True

    def set(self, on: bool) -> bool:
        with self._lock:
            if not self._open_locked():
                return False
            try:
                if on:
                    self._device.on()
                else:
                    self._device.off()
            except Exception as exc:
                self._last_error = f"relay {self.name}: switching {'on' if on else 'off'} failed: {exc}"
                log.error("%s", self._last_error)
                return False
            self._last_error = None
            if on != self._on:
                self._switches += 1
                self._last_change = time.time()
            self._on = on
            return True

    def on(self) -> bool:
        return self.set(True)

    def off(self) -> bool:
        return self.set(False)

    @property
    def is_on(self) -> bool:
        return self._on

    def close(self) -> None:
        """Switch off and release the pin."""
        if self._device is not None:
            self.off()
        with self._lock:
            device, self._device = self._device, None
            if device is not None:
                try:
                    device.close()
                except Exception as exc:
                    log.warning("relay %s: releasing the pin failed: %s", self.name, exc)

    def health(self) -> dict[str, object]:
        with self._lock:
            return {
                "state": "down" if self._last_error else ("ok" if self._device is not None else "closed"),
                "pin": self.pin,
                "on": self._on,
                "switches": self._switches,
                "last_change": self._last_change,
                "last_error": self._last_error,
            }


class FeedbackInput:
    """A digital input that reports whether a relay's load really runs. Thread-safe.

    Wiring: with `pull_up=True` (the default) the contact closes the pin to ground and a closed
    contact reads as present; `pull_up=False` pulls the pin down and a contact to 3.3 V reads
    as present; `pull_up=None` (an external resistor) needs `active_state`, the level that
    means present. Like `Relay`, a pin that cannot be claimed does not raise: `read()` returns
    None (unknown), health says `down`, and the next read tries again.

    `on_change(present)` is called on gpiozero's thread at each edge (with mock pins, in the
    thread that drives the pin): keep it short.
    """

    def __init__(self, name: str, pin: int | str, *, pull_up: bool | None = True, active_state: bool | None = None,
                 pin_factory: Any = None, on_change: Callable[[bool], None] | None = None):
        self.name = name
        self.pin = pin
        self.pull_up = pull_up
        self.active_state = active_state
        self.pin_factory = pin_factory
        self.on_change = on_change
        self._device: Any = None
        self._lock = threading.Lock()
        self._present: bool | None = None
        self._changes = 0
        self._last_change: float | None = None  # wall time of the last edge
        self._last_error: str | None = None

    def open(self) -> bool:
        with self._lock:
            return self._open_locked()

    def _open_locked(self) -> bool:
        if self._device is not None:
            return True
        try:
            from gpiozero import DigitalInputDevice

            device = DigitalInputDevice(self.pin, pull_up=self.pull_up, active_state=self.active_state,
                                        pin_factory=self.pin_factory)
        except Exception as exc:  # BadPinFactory, PinInvalidPin, PinInvalidState, GPIOPinInUse, OSError...
            error = f"feedback of {self.name} on pin {self.pin!r}: cannot claim the pin: {exc}"
            if error != self._last_error:
                log.error("%s", error)
            self._last_error = error
            return False
        device.when_activated = lambda: self._edge(True)
        device.when_deactivated = lambda: self._edge(False)
        self._device = device
        self._present = bool(device.is_active)
        self._last_error = None
        log.info("feedback of %s on pin %r (pull-up %s)", self.name, self.pin, self.pull_up)
        return True

    def _edge(self, present: bool) -> None:
        with self._lock:
            if present == self._present:
                return
            self._present = present
            self._changes += 1
            self._last_change = time.time()
        if self.on_change is not None:
            self.on_change(present)

    def read(self) -> bool | None:
        """Whether the feedback is present now; None if the pin cannot be read."""
        with self._lock:
            if not self._open_locked():
                return None
            try:
                present = bool(self._device.is_active)
            except Exception as exc:
                self._last_error = f"feedback of {self.name}: reading pin {self.pin!r} failed: {exc}"
                log.error("%s", self._last_error)
                return None
            self._last_error = None
            if present != self._present:  # an edge the callback has not delivered (yet)
                if self._present is not None:
                    self._changes += 1
                    self._last_change = time.time()
                self._present = present
            return present

    def close(self) -> None:
        with self._lock:
            device, self._device = self._device, None
        if device is not None:
            try:
                device.close()
            except Exception as exc:
                log.warning("feedback of %s: releasing the pin failed: %s", self.name, exc)

    def health(self) -> dict[str, object]:
        with self._lock:
            return {
                "state": "down" if self._last_error else ("ok" if self._device is not None else "closed"),
                "pin": self.pin,
                "present": self._present,
                "changes": self._changes,
                "last_change": self._last_change,
                "last_error": self._last_error,
            }
