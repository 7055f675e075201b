"""A Modbus RTU meter (or several on one bus) on a serial port, for tests, demos and bench work.

It answers FC 03/04 reads from the registers a profile describes, FC 06 writes to the
profile's address/baud registers, and injects the faults a site bus shows: CRC errors,
silence (timeouts), garbage, cut-off frames, exception replies, noise before a good frame.
Values come from a scenario (quiet_day, night_piling, dust_episode, flaky_wiring), a constant,
or are set at run time (`set_value`, or a JSON control file for a subprocess).

In a test:
    sim = Simulator(port_a, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(65.0))])
    sim.start(); ...; sim.set_value("noise_la", 80.0); sim.set_fault("crc"); ...; sim.stop()
From a shell:  edge-fw simulate --profile renke_rs_zs_n01 --port /tmp/ttyA --scenario quiet_day
          or:  python -m firmware_tools.simulator --profile ... (same arguments)
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import serial

from drivers.modbus.codec import encode_raw
from drivers.modbus.profile import FieldSpec, Profile
from drivers.modbus.rtu import exception_response, parse_request, read_response, write_response

log = logging.getLogger(__name__)

FAULTS = ("timeout", "crc", "garbage", "partial", "exception", "prefixed")
SCENARIOS = ("quiet_day", "night_piling", "dust_episode", "flaky_wiring")

BASE = {
    "noise_la": 55.0, "tsp": 120.0, "pm10": 60.0, "pm2_5": 35.0, "temperature": 24.0, "humidity": 55.0,
    "wind_speed": 1.8, "wind_direction": 120.0, "pressure": 101.3,
}


class ValueSource(Protocol):
    def value(self, quantity: str, t: float) -> float | None: ...

    def fault(self, t: float) -> str | None: ...


@dataclass
class ConstantSource:
    """Fixed values: one number for every quantity, or a mapping per quantity (others from BASE)."""

    values: float | dict[str, float] = 55.0

    def value(self, quantity: str, t: float) -> float | None:
        if isinstance(self.values, dict):
            return self.values.get(quantity, BASE.get(quantity, 0.0))
        return float(self.values)

    def fault(self, t: float) -> str | None:
        return None


@dataclass
class Scenario:
    """A named site situation as a function of seconds since start, with seeded randomness."""

    name: str
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; known: {', '.join(SCENARIOS)}")
        self.rng = random.Random(self.seed)

    def value(self, quantity: str, t: float) -> float | None:
        g = self.rng.gauss
        base = BASE.get(quantity, 0.0)
        if quantity == "noise_la":
            if self.name == "night_piling":
                piling = (t % 60.0) < 40.0  # 40 s of piling, 20 s pause
                return min(105.0, 84.0 + g(0, 4)) if piling else max(35.0, 46.0 + g(0, 1.5))
            if self.name == "dust_episode":
                return 62.0 + g(0, 3)
            return max(35.0, 55.0 + 4.0 * math.sin(2 * math.pi * t / 600.0) + g(0, 1.5))
        if quantity in ("tsp", "pm10", "pm2_5"):
            if self.name == "dust_episode":
                phase = (t % 900.0) / 900.0  # 15-minute episode: rise to a peak and fall back
                pm10 = 60.0 + 390.0 * (1.0 - abs(2.0 * phase - 1.0))
                factor = {"tsp": 1.9, "pm10": 1.0, "pm2_5": 0.45}[quantity]
                return max(0.0, pm10 * factor + g(0, 5))
            if self.name == "night_piling":
                base *= 1.5
            return max(0.0, base + g(0, base * 0.08))
        if quantity == "wind_direction":
            return (base + g(0, 20)) % 360.0
        return base + g(0, abs(base) * 0.02 + 0.01)

    def fault(self, t: float) -> str | None:
        if self.name != "flaky_wiring":
            return None
        x = self.rng.random()
        for kind, edge in (("crc", 0.08), ("timeout", 0.16), ("garbage", 0.24), ("exception", 0.28),
                           ("partial", 0.30), ("prefixed", 0.33)):
            if x < edge:
                return kind
        return None


def make_source(scenario: str | None = None, value: float | dict[str, float] | None = None,
                seed: int = 0) -> ValueSource:
    if value is not None:
        return ConstantSource(value)
    return Scenario(scenario or "quiet_day", seed)


@dataclass
class SimMeter:
    """One simulated device on the bus."""

    profile: Profile
    address: int
    source: ValueSource = field(default_factory=ConstantSource)
    baud_code: int | None = None  # last value written to the baud register


class Simulator:
    """Serves one serial port from a background thread; survives the port vanishing."""

    def __init__(self, port: str, meters: list[SimMeter], baud: int = 9600, seed: int = 0,
                 control_file: str | os.PathLike[str] | None = None):
        if not meters:
            raise ValueError("simulate at least one meter")
        self.port = port
        self.baud = baud
        self.meters = list(meters)
        self.requests = 0
        self.answered = 0
        self.faults_injected = 0
        self._overrides: dict[str, float] = {}
        self._fault: str | None = None
        self._fault_rate = 1.0
        self._rng = random.Random(seed)
        self._control = Path(control_file) if control_file else None
        self._control_mtime = 0.0
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ser: serial.Serial | None = None
        self.opened = threading.Event()

    # ------------------------------------------------------------ control
    def set_value(self, quantity: str, value: float | None) -> None:
        """Override a quantity on every simulated meter (None: back to the source)."""
        with self._lock:
            if value is None:
                self._overrides.pop(quantity, None)
            else:
                self._overrides[quantity] = float(value)

    def set_fault(self, kind: str | None, rate: float = 1.0) -> None:
        """Inject `kind` into this fraction of answers (None: stop injecting)."""
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._fault, self._fault_rate = kind, rate

    def start(self, wait_s: float = 2.0) -> Simulator:
        """Serve from a thread; wait up to `wait_s` for the port to open (it may not exist yet)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sim:{self.port}", daemon=True)
        self._thread.start()
        self.opened.wait(wait_s)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(3.0)
        self._close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ serving
    def _run(self) -> None:
        buf = bytearray()
        last_rx = time.monotonic()
        while not self._stop.is_set():
            if self._ser is None and not self._open():
                self._stop.wait(0.1)
                continue
            assert self._ser is not None
            try:
                chunk = self._ser.read(256)
            except (serial.SerialException, OSError, termios.error) as exc:
                log.info("simulator: %s went away (%s); waiting for it", self.port, exc)
                self._close()
                buf.clear()
                continue
            self._poll_control()
            now = time.monotonic()
            if chunk:
                if now - last_rx > 0.1:
                    buf.clear()  # a silence ends any half-received frame
                buf += chunk
                last_rx = now
            while len(buf) >= 8:
                req = parse_request(bytes(buf[:8]))
                if req is None:
                    del buf[0]  # hunt for the next frame start
                    continue
                del buf[:8]
                try:
                    self._answer(*req)
                except (serial.SerialException, OSError, termios.error) as exc:
                    log.info("simulator: write to %s failed (%s)", self.port, exc)
                    self._close()
                    buf.clear()
                    break

    def _open(self) -> bool:
        try:
            self._ser = serial.Serial(self.port, self.baud, timeout=0.02)
        except (serial.SerialException, OSError, ValueError):
            return False
        self.opened.set()
        return True

    def _close(self) -> None:
        self.opened.clear()
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except Exception:
                pass

    def _answer(self, address: int, function: int, register: int, arg: int) -> None:
        self.requests += 1
        meter = next((m for m in self.meters if m.address == address), None)
        if address == 0 and function == 6:
            for m in self.meters:
                self._write(m, register, arg)  # broadcast: act, never answer
            return
        if meter is None:
            return  # nobody at that address: silence, as on a real bus
        t = time.monotonic() - self._t0
        if function in (3, 4):
            words = self._read(meter, function, register, arg, t)
            frame = (exception_response(address, function, 2) if words is None
                     else read_response(address, function, words))
        elif function == 6:
            ok = self._write(meter, register, arg)
            frame = write_response(address, register, arg) if ok else exception_response(address, 6, 2)
        else:
            frame = exception_response(address, function, 1)
        frame = self._inject(frame, meter, t)
        if frame and self._ser is not None:
            self._ser.write(frame)
            self._ser.flush()
            self.answered += 1

    def _read(self, meter: SimMeter, function: int, register: int, count: int, t: float) -> list[int] | None:
        regs: dict[int, int] = {}
        p = meter.profile
        for setting, current in ((p.address_register, meter.address), (p.baud_register, meter.baud_code)):
            if setting is not None and function == 3:
                if current is None:
                    current = setting.code_for(p.default_baud) if setting.codes else p.default_baud
                regs[setting.register] = current
        span = p.register_span(function)
        for f in p.fields:
            if f.function == function:
                for i, w in enumerate(self._encode(meter, f, t)):
                    regs[f.register + i] = w
        out: list[int] = []
        for r in range(register, register + count):
            if r in regs:
                out.append(regs[r])
            elif span is not None and span[0] <= r < span[1]:
                out.append(0)  # a gap inside the map reads as zero
            else:
                return None  # illegal data address
        return out

    def _encode(self, meter: SimMeter, f: FieldSpec, t: float) -> list[int]:
        with self._lock:
            value = self._overrides.get(f.quantity)
        if value is None:
            value = meter.source.value(f.quantity, t)
        if value is None:
            value = 0.0
        return encode_raw((value - f.offset) / f.scale, f.dtype, f.byte_order, f.word_order)

    def _write(self, meter: SimMeter, register: int, value: int) -> bool:
        p = meter.profile
        if p.address_register is not None and register == p.address_register.register:
            if not 1 <= value <= 255:
                return False
            meter.address = value
            return True
        if p.baud_register is not None and register == p.baud_register.register:
            if p.baud_register.setting_for(value) is None:
                return False
            meter.baud_code = value
            return True
        return False

    def _inject(self, frame: bytes, meter: SimMeter, t: float) -> bytes:
        with self._lock:
            kind, rate = self._fault, self._fault_rate
        if kind is not None and self._rng.random() >= rate:
            kind = None
        if kind is None:
            kind = meter.source.fault(t)
        if kind is None:
            return frame
        self.faults_injected += 1
        rng = self._rng
        if kind == "timeout":
            return b""
        if kind == "crc":
            return frame[:-1] + bytes([frame[-1] ^ 0x5A])
        if kind == "partial":
            return frame[: max(1, len(frame) // 2)]
        if kind == "exception":
            return exception_response(frame[0], frame[1] & 0x7F, 4)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(3, 24)))
        if junk[0] == frame[0]:
            junk = bytes([frame[0] ^ 0xFF]) + junk[1:]
        if kind == "garbage":
            return junk
        return junk + frame  # "prefixed": line noise before a good answer

    def _poll_control(self) -> None:
        """Apply a JSON control file when it changes: {"values": {...}, "fault": "crc", "fault_rate": 1}."""
        if self._control is None:
            return
        try:
            mtime = self._control.stat().st_mtime
            if mtime == self._control_mtime:
                return
            self._control_mtime = mtime
            data = json.loads(self._control.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError) as exc:
            log.debug("control file %s unreadable: %s", self._control, exc)
            return
        if not isinstance(data, dict):
            return
        values = data.get("values") or {}
        with self._lock:
            self._overrides = {str(k): float(v) for k, v in values.items() if isinstance(v, (int, float))}
        fault = data.get("fault")
        try:
            self.set_fault(fault if isinstance(fault, str) else None, float(data.get("fault_rate", 1.0)))
        except ValueError as exc:
            log.warning("control file: %s", exc)


def main(argv: list[str] | None = None) -> int:
    """`python -m firmware_tools.simulator ...`: the same arguments as `edge-fw simulate`."""
    import argparse

    from firmware_tools.cli import simulate

    parser = argparse.ArgumentParser(prog="python -m firmware_tools.simulator", description=simulate.HELP)
    simulate.add_arguments(parser)
    return simulate.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
