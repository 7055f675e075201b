"""Shared bits of the meter field tools: clear errors instead of tracebacks, a progress bar."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from drivers.modbus.master import RtuMaster
from drivers.modbus.profile import BAUD_RATES, Profile, ProfileError, load_profile
from drivers.modbus.rtu import PortError


class ToolError(Exception):
    """A problem the technician can fix; printed as one line, no traceback."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(command: str, exc: ToolError | PortError | ProfileError) -> int:
    print(f"edge-fw {command}: error: {exc}", file=sys.stderr)
    return exc.code if isinstance(exc, ToolError) else 2


def add_bus_arguments(parser: argparse.ArgumentParser, baud_help: str = "baud rate (default: the profile's)") -> None:
    parser.add_argument("port", help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--baud", type=int, choices=BAUD_RATES, metavar="BAUD", help=baud_help)
    parser.add_argument("--parity", choices=("N", "E", "O"), help="parity (default: the profile's, usually N)")
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds to wait for an answer (default 0.5)")


def profile_arg(name: str) -> Profile:
    try:
        return load_profile(name)
    except ProfileError as exc:
        raise ToolError(str(exc)) from None


def open_master(port: str, baud: int, parity: str) -> RtuMaster:
    try:
        return RtuMaster.open(port, baud, parity)
    except PortError as exc:
        raise ToolError(str(exc)) from None


class Progress:
    """A one-line bar on a terminal; a line every 10 % otherwise (journald, CI logs)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30):
        self.total = max(1, total)
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._t0 = time.monotonic()

    def update(self, step: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + step)
        frac = self.done / self.total
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {frac:4.0%} {note}"
        if self._tty:
            self.stream.write("\r" + line.ljust(self.width + 40))
            self.stream.flush()
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
