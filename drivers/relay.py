"""A relay output (spray cannon pump, strobe light) on one GPIO pin, through gpiozero.

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
