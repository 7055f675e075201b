"""The measure engine: Readings in, legal figures (Measures) out.

Each (sensor, quantity) gets a series: noise levels (`noise*`) get energy figures (Leq,
Lmax, Lmin, L5..L95, and Ld/Ln on the daily block); other quantities (dust, weather) get
arithmetic means. Invalid readings (comm error, out of range, stale) are left out of the
figures and counted. Wind direction is not averaged: a plain mean of angles is wrong (350°
and 10° average to 180°) and a vector mean needs the speed; it is skipped and counted.

Thread-safe: bus threads call `add`, the core calls `rolling` and `close_period`.

Call `close_period(60, end)` a second or two after the boundary so readings taken just
before it have arrived; a reading for an already-closed block is dropped and counted
(`late`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timezone

from drivers.types import Reading
from edge_agent.measures.calendar import SiteCalendar
from edge_agent.measures.series import BLOCK_PERIODS, Figure, MeanSeries, NoiseSeries
from edge_agent.types import Measure

UNAVERAGED = frozenset({"wind_direction"})


def is_level(quantity: str) -> bool:
    return quantity.startswith("noise")


class MeasureEngine:
    def __init__(self, timezone: str = "Asia/Shanghai",
                 night_windows: Iterable[tuple[str, str]] = (("23:00", "07:00"),),
                 validity: float = 0.75, sample_period_s: float = 1.0):
        if not 0.0 < validity <= 1.0:
            raise ValueError("validity must be in (0, 1]")
        if sample_period_s <= 0:
            raise ValueError("sample_period_s must be > 0")
        self.calendar = SiteCalendar(timezone, list(night_windows))
        self.validity = validity
        self.sample_period_s = sample_period_s
        self._periods: dict[str, float] = {}
        self._series: dict[tuple[str, str], NoiseSeries | MeanSeries] = {}
        self._lock = threading.Lock()
        self.skipped = 0  # readings of quantities we do not average

    def set_sample_period(self, sensor_id: str, period_s: float) -> None:
        """Expected seconds between samples of this sensor (its poll interval): validity uses it."""
        if period_s <= 0:
            raise ValueError("period must be > 0")
        with self._lock:
            self._periods[sensor_id] = period_s
            for (sid, _q), s in self._series.items():
                if sid == sensor_id:
                    s.period_s = period_s

    def add(self, reading: Reading) -> None:
        """Feed one reading; an invalid one is counted, not used."""
        if reading.quantity in UNAVERAGED:
            self.skipped += 1
            return
        key = (reading.sensor_id, reading.quantity)
        ts = reading.time.timestamp()
        value = reading.value if reading.valid else None
        with self._lock:
            series = self._series.get(key)
            if series is None:
                period = self._periods.get(reading.sensor_id, self.sample_period_s)
                cls = NoiseSeries if is_level(reading.quantity) else MeanSeries
                series = self._series[key] = cls(self.calendar, period, self.validity)
            if reading.unit:
                series.unit = reading.unit
            series.add(ts, value)

    def rolling(self, now: datetime) -> list[Measure]:
        """Rolling figures ending at `now`: noise Leq/Lmax/Lmin over 60/300/1200/3600 s (plus
        L5..L95 over 1200 and 3600 s); means over 60/300/900/3600 s."""
        ts = now.timestamp()
        end = now.astimezone(timezone.utc)
        out: list[Measure] = []
        with self._lock:
            for (sid, q), series in sorted(self._series.items()):
                out += [_measure(sid, q, series.unit, end, f) for f in series.rolling(ts)]
        return out

    def close_period(self, period_s: int, end: datetime) -> list[Measure]:
        """Figures of the local clock-aligned block [end - period, end) for period 60, 3600 or
        86400 (the local calendar day). Each block is handed out once."""
        if period_s not in BLOCK_PERIODS:
            raise ValueError(f"period_s must be one of {BLOCK_PERIODS}")
        ts = end.timestamp()
        _start, stop = self.calendar.block_bounds(period_s, ts - 0.5)
        if abs(stop - ts) > 1e-6:
            raise ValueError(f"{end.isoformat()} is not the end of a {period_s} s block in the site's time zone")
        k = BLOCK_PERIODS.index(period_s)
        end_utc = end.astimezone(timezone.utc)
        out: list[Measure] = []
        with self._lock:
            for (sid, q), series in sorted(self._series.items()):
                blk = series.close(k, ts)
                out += [_measure(sid, q, series.unit, end_utc, f) for f in series.block_figures(period_s, blk)]
        return out

    def clock_stepped(self, delta_s: float) -> None:
        """The wall clock jumped: see `_Series.clock_stepped`."""
        with self._lock:
            for series in self._series.values():
                series.clock_stepped(delta_s)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"series": len(self._series), "late": sum(s.late for s in self._series.values()),
                    "skipped": self.skipped}


def _measure(sensor: str, quantity: str, unit: str, end: datetime, f: Figure) -> Measure:
    return Measure(sensor_id=sensor, quantity=quantity, window_s=f.window_s, figure=f.figure, value=f.value,
                   unit=unit, end=end, samples=f.samples, invalid=f.invalid, valid=f.valid)
