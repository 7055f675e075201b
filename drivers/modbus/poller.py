"""The bus thread: one master per serial port, polling every meter on that bus on its schedule.

Nothing a meter or the wiring does stops this thread. A failed poll yields `comm_error`
Readings (so the figures count the gap) and bumps the meter's error counters; a port that
fails is closed and reopened with back-off (capped at the shortest poll interval, so a
replugged adapter is back within two poll periods); many failures in a row on a bus reopen
the port too (a wedged USB adapter). Meters start at jittered offsets so boxes powered up
together do not poll in lock-step, and requests on one bus are spaced by a gap.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from drivers.modbus.master import RtuMaster
from drivers.modbus.profile import FieldSpec, Profile
from drivers.modbus.rtu import ModbusError, PortError
from drivers.types import Quality, Reading

log = logging.getLogger(__name__)

ERROR_KINDS = ("timeout", "crc", "garbage", "exception", "port", "decode")


@dataclass(frozen=True)
class MeterSpec:
    """One meter on a bus, as the poller needs it."""

    id: str
    address: int
    profile: Profile
    poll_interval_s: float = 1.0
    timeout_s: float = 0.5
    retries: int = 1
    stale_after_s: float | None = None  # overrides the profile's per-field value when set


@dataclass(frozen=True)
class BusSpec:
    """One serial port and the meters wired to it."""

    port: str
    baud: int
    parity: str = "N"
    stopbits: int = 1
    gap_s: float = 0.05
    meters: tuple[MeterSpec, ...] = ()
    down_after: int = 3  # consecutive failed polls -> meter "down"
    reopen_after: int = 10  # consecutive failed transactions on the bus -> reopen the port


@dataclass
class _MeterState:
    spec: MeterSpec
    next_due: float
    polls: int = 0
    ok_polls: int = 0
    consecutive_failures: int = 0
    last_ok: datetime | None = None
    last_error: str | None = None
    last_error_time: datetime | None = None
    last_quality: str | None = None
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    last_values: dict[str, tuple[float, float]] = field(default_factory=dict)  # quantity -> (value, since)


class BusPoller:
    """Polls every meter of one bus from its own thread; hands Readings to `on_reading`."""

    def __init__(self, bus: BusSpec, on_reading: Callable[[Reading], None],
                 opener: Callable[[BusSpec], RtuMaster] | None = None, seed: int | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        if not bus.meters:
            raise ValueError(f"{bus.port}: a bus needs at least one meter")
        self.bus = bus
        self._on_reading = on_reading
        self._now = now  # wall clock that stamps readings (the agent's, so tests can move it)
        self._opener = opener or (lambda b: RtuMaster.open(b.port, b.baud, b.parity, b.stopbits, b.gap_s))
        rng = random.Random(seed)
        start = time.monotonic()
        self._meters = [_MeterState(m, start + rng.uniform(0, min(m.poll_interval_s, 5.0))) for m in bus.meters]
        self._master: RtuMaster | None = None
        self._port_error: str | None = None
        self._next_open = 0.0
        self._backoff = 0.0
        self._bus_failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reopens = 0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"modbus:{self.bus.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        self._close()

    def alive(self) -> bool:
        """The bus thread runs (True before start)."""
        return self._thread is None or self._thread.is_alive()

    # ------------------------------------------------------------ health
    def health(self) -> dict[str, dict[str, object]]:
        with self._lock:
            return {m.spec.id: self._health_of(m) for m in self._meters}

    def _health_of(self, m: _MeterState) -> dict[str, object]:
        if m.consecutive_failures >= self.bus.down_after:
            state = "down"
        elif m.consecutive_failures or m.polls == 0 or m.last_quality not in (None, "ok"):
            state = "degraded"
        else:
            state = "ok"
        return {
            "state": state,
            "port": self.bus.port,
            "address": m.spec.address,
            "profile": m.spec.profile.name,
            "port_open": self._master is not None,
            "port_reopens": self.reopens,
            "polls": m.polls,
            "ok_polls": m.ok_polls,
            "consecutive_failures": m.consecutive_failures,
            "last_ok": m.last_ok.isoformat() if m.last_ok else None,
            "last_error": m.last_error if m.polls else (m.last_error or "not polled yet"),
            "last_error_time": m.last_error_time.isoformat() if m.last_error_time else None,
            "errors": dict(m.errors),
        }

    # ------------------------------------------------------------ the loop
    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._loop()
                backoff = 0.5
            except Exception:  # a bug in a loop iteration must not end the bus thread
                log.exception("%s: bus loop failed; restarting it in %.1f s", self.bus.port, backoff)
                self._close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if self._master is None and now >= self._next_open:
                self._try_open()
            meter = min(self._meters, key=lambda m: m.next_due)
            wake = meter.next_due if self._master is not None else min(meter.next_due, self._next_open)
            if wake > now:
                self._stop.wait(wake - now)
                continue
            if meter.next_due > now:
                continue
            self._poll(meter)
            interval = meter.spec.poll_interval_s
            meter.next_due += interval
            late = time.monotonic() - meter.next_due
            if late > 0:  # fell behind (timeouts ate the bus): skip, never burst
                meter.next_due += interval * (int(late // interval) + 1)

    def _try_open(self) -> None:
        try:
            self._master = self._opener(self.bus)
        except PortError as exc:
            self._port_failed(str(exc))
            return
        except Exception as exc:
            self._port_failed(f"{self.bus.port}: cannot open: {exc}")
            return
        if self._port_error is not None:
            log.warning("%s: port open again", self.bus.port)
            now = time.monotonic()
            for m in self._meters:  # poll at once: recovery should not wait out a schedule
                m.next_due = min(m.next_due, now)
        else:
            log.info("%s: port open at %d baud", self.bus.port, self.bus.baud)
        self._port_error = None
        self._backoff = 0.0
        self._bus_failures = 0

    def _port_failed(self, text: str) -> None:
        self._close()
        if text != self._port_error:
            log.warning("%s", text)
        self._port_error = text
        # Capped at half the shortest poll interval: a replugged adapter is polled again within
        # two poll periods. Opening a missing path costs nothing, so the short cap is cheap.
        cap = max(0.1, min(m.spec.poll_interval_s for m in self._meters) / 2)
        self._backoff = min(cap, max(0.1, self._backoff * 2))
        self._next_open = time.monotonic() + self._backoff

    def _close(self) -> None:
        master, self._master = self._master, None
        if master is not None:
            master.close()

    def _poll(self, m: _MeterState) -> None:
        spec = m.spec
        readings: list[Reading] = []
        errors: list[ModbusError] = []
        for block in spec.profile.blocks():
            words, err = self._read_block(spec, block.function, block.start, block.count)
            now = self._now()
            if err is not None:
                errors.append(err)
                readings += [Reading(spec.id, f.quantity, None, f.unit, now, Quality.COMM_ERROR)
                             for f in block.fields]
                continue
            assert words is not None
            for f, w in block.split(words):
                readings.append(self._reading(m, f, w, now))
        self._record(m, readings, errors)
        for r in readings:
            try:
                self._on_reading(r)
            except Exception:
                log.exception("reading consumer failed on %s/%s", r.sensor_id, r.quantity)

    def _read_block(self, spec: MeterSpec, function: int, start: int,
                    count: int) -> tuple[list[int] | None, ModbusError | None]:
        err: ModbusError | None = None
        for _attempt in range(spec.retries + 1):
            if self._master is None:
                return None, PortError(self._port_error or f"{self.bus.port}: port closed")
            try:
                words = self._master.read_registers(spec.address, function, start, count, spec.timeout_s)
                self._bus_failures = 0
                return words, None
            except PortError as exc:
                self._port_failed(str(exc))
                return None, exc
            except ModbusError as exc:
                err = exc
            except Exception as exc:  # never let an odd answer escape the bus thread
                err = ModbusError(f"unexpected decode failure: {exc!r}")
            self._count_error(spec.id, err)
            if err.kind == "exception":
                self._bus_failures = 0  # the bus works; this meter just refuses the request
                return None, err  # asking again will not change its mind
        self._bus_failures += 1
        if self._bus_failures >= self.bus.reopen_after:
            log.warning("%s: %d failed requests in a row; reopening the port", self.bus.port, self._bus_failures)
            self._close()
            self._bus_failures = 0
            self._next_open = time.monotonic()
            self.reopens += 1
        return None, err

    def _count_error(self, meter_id: str, err: ModbusError) -> None:
        with self._lock:
            for m in self._meters:
                if m.spec.id == meter_id:
                    m.errors[err.kind] = m.errors.get(err.kind, 0) + 1

    def _reading(self, m: _MeterState, f: FieldSpec, words: tuple[int, ...], now: datetime) -> Reading:
        try:
            value = f.value(words)
        except Exception as exc:
            log.warning("%s: cannot decode %s from %s: %s", m.spec.id, f.quantity, words, exc)
            return Reading(m.spec.id, f.quantity, None, f.unit, now, Quality.COMM_ERROR)
        if not f.in_range(value):  # NaN/inf from a float register is a sensor fault: no value
            kept = value if math.isfinite(value) else None
            return Reading(m.spec.id, f.quantity, kept, f.unit, now, Quality.OUT_OF_RANGE)
        stale_after = m.spec.stale_after_s if m.spec.stale_after_s is not None else f.stale_after_s
        mono = time.monotonic()
        prev = m.last_values.get(f.quantity)
        if prev is None or prev[0] != value:
            m.last_values[f.quantity] = (value, mono)
        elif stale_after is not None and mono - prev[1] > stale_after:
            return Reading(m.spec.id, f.quantity, value, f.unit, now, Quality.STALE)
        return Reading(m.spec.id, f.quantity, value, f.unit, now, Quality.OK)

    def _record(self, m: _MeterState, readings: list[Reading], errors: list[ModbusError]) -> None:
        now = self._now()
        with self._lock:
            m.polls += 1
            if errors:
                m.consecutive_failures += 1
                err = errors[-1]
                if isinstance(err, PortError):
                    m.errors["port"] += 1
                text = f"{err.kind}: {err}"
                if m.consecutive_failures == 1 or m.consecutive_failures == self.bus.down_after:
                    log.warning("%s (address %d on %s): %s", m.spec.id, m.spec.address, self.bus.port, text)
                m.last_error, m.last_error_time = text, now
            else:
                if m.consecutive_failures >= self.bus.down_after:
                    log.warning("%s: answering again after %d failed polls", m.spec.id, m.consecutive_failures)
                m.consecutive_failures = 0
                m.ok_polls += 1
                m.last_ok = now
            worst = [r.quality.value for r in readings if r.quality is not Quality.OK]
            m.last_quality = worst[0] if worst else "ok"
