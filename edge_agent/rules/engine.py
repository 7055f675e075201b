"""The site's rules, applied to figures and readings. Knows thresholds and schedules, not ports.

Window rules (20-min LAeq, 5-min LAeq, dust means) are judged on the rolling figures each
time `evaluate` runs (once a second). Each limit has an early warning on a shorter window
below it (noise: a margin in dB; dust: a share of the limit), so the crew is told, and the
spray starts, before the limit is crossed. The night Lmax rule is judged on every noise reading
as it arrives, so a single loud event reaches the speaker and the bureau without waiting
for the next evaluation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.types import Reading
from edge_agent.config.rules import RulesConfig, Timing
from edge_agent.rules.schedule import Schedule
from edge_agent.rules.tracker import Condition, Tracker
from edge_agent.types import Measure, Violation

log = logging.getLogger(__name__)

ViolationSink = Callable[[Violation], None]

_UG_UNITS = {"ug/m3", "µg/m³", "ug/m³", "μg/m³", "µg/m3", "μg/m3"}
_MG_UNITS = {"mg/m3", "mg/m³"}


def convert_dust(value: float, unit: str, to_unit: str) -> float:
    """Dust readings come in µg/m³ or mg/m³ depending on the meter; limits in either."""
    src_ug, dst_ug = unit in _UG_UNITS, to_unit in _UG_UNITS
    if src_ug == dst_ug:
        return value
    return value / 1000.0 if src_ug else value * 1000.0


@dataclass(frozen=True)
class _Key:
    sensor: str
    quantity: str
    window_s: int
    figure: str


def _classify(value: float | None, limit: float, hysteresis: float) -> Condition:
    if value is None:
        return Condition.CLEAR
    if value > limit:
        return Condition.OVER
    if value > limit - hysteresis:
        return Condition.BAND
    return Condition.CLEAR


def wall_seconds(now: datetime) -> float:
    """Durations from the wall-clock labels themselves (tests that feed figures in time order)."""
    return now.timestamp()


class RuleEngine:
    """Judges readings and rolling figures; each state change goes to `report`.

    `elapsed(now)` gives the seconds that durations (minimum duration, clear time, cooldown)
    are measured in: the agent passes its monotonic clock, so a wall-clock step neither
    completes nor prolongs a breach.
    """

    def __init__(self, rules: RulesConfig, schedule: Schedule, report: ViolationSink,
                 elapsed: Callable[[datetime], float] = wall_seconds,
                 construction_share: Callable[[datetime, float], float | None] | None = None):
        self.rules = rules
        # share of the sound energy the microphone attributes to construction over (now - window, now]
        self.construction_share = construction_share
        self.schedule = schedule
        self.report = report
        self.elapsed = elapsed
        self._trackers: dict[tuple[str, str], Tracker] = {}
        self._last_noise: dict[str, float] = {}
        self._lock = threading.Lock()
        self._out: list[Violation] = []

    def active(self) -> list[Tracker]:
        with self._lock:
            return [t for t in self._trackers.values() if t.active]

    # --- inputs ------------------------------------------------------------------------------

    def on_reading(self, reading: Reading) -> None:
        """Instantaneous rules: night Lmax."""
        rule = self.rules.night_lmax
        if not rule.enabled or reading.quantity != self.rules.noise.quantity:
            return
        if not reading.valid:
            return
        now = reading.time
        limit = self.rules.noise.night_limit_db + self.rules.noise.indoor_offset_db + rule.excess_db
        night = self.schedule.is_night(now) and self.schedule.permit_for(now, "night_lmax") is None
        value = reading.value
        condition = _classify(value, limit, self.rules.noise.hysteresis_db) if night else Condition.CLEAR
        figures = {"lmax": value, "limit": limit, "period": "night" if night else "day", "unit": "dB(A)"}
        with self._lock:
            self._last_noise[reading.sensor_id] = self.elapsed(now)
            self._update("night_lmax", reading.sensor_id, rule.timing, now, condition, figures,
                         f"night Lmax {value:.1f} dB(A) over {limit:.0f} dB(A)")
        self._flush()

    def evaluate(self, now: datetime, measures: Iterable[Measure]) -> None:
        """Window rules, on the current rolling figures."""
        index: dict[_Key, Measure] = {}
        for m in measures:
            if m.valid and m.value is not None:
                index[_Key(m.sensor_id, m.quantity, m.window_s, m.figure)] = m
        noise_sensors = {k.sensor for k in index if k.quantity == self.rules.noise.quantity}
        dust_sensors = {k.sensor for k in index if k.quantity == self.rules.dust.quantity}
        with self._lock:
            for sensor in noise_sensors | self._sources("noise_over_limit", "noise_early_warning", "night_work"):
                self._noise(now, sensor, index)
            for sensor in dust_sensors | self._sources("dust_over_limit", "dust_early_warning"):
                self._dust(now, sensor, index)
            # A night-Lmax breach whose meter has gone quiet cannot be proven any longer.
            mono = self.elapsed(now)
            for sensor, last in list(self._last_noise.items()):
                if mono - last > 5:
                    self._update("night_lmax", sensor, self.rules.night_lmax.timing, now, Condition.CLEAR,
                                 {"reason": "no readings"}, "")
        self._flush()

    # --- rules -------------------------------------------------------------------------------

    def _sources(self, *kinds: str) -> set[str]:
        return {src for (kind, src), t in self._trackers.items() if kind in kinds and t.active}

    def _noise(self, now: datetime, sensor: str, index: dict[_Key, Measure]) -> None:
        cfg = self.rules.noise
        period = self.schedule.period(now)
        limit = (cfg.night_limit_db if period == "night" else cfg.day_limit_db) + cfg.indoor_offset_db

        def leq(window: int) -> Measure | None:
            return index.get(_Key(sensor, cfg.quantity, window, "leq"))

        if cfg.enabled:
            m = leq(cfg.window_s)
            permitted = self.schedule.permit_for(now, "noise_over_limit") is not None
            cond = Condition.CLEAR if permitted else _classify(_value(m), limit, cfg.hysteresis_db)
            figures = self._figures(m, limit, period, "leq")
            if period == "night":
                cond = self._construction_only(now, cfg.window_s, cond, figures)
            self._update("noise_over_limit", sensor, cfg.timing, now, cond,
                         figures,
                         f"LAeq {cfg.window_s // 60} min {_fmt(m)} dB(A) over the {period} limit {limit:.0f} dB(A)")

        ew = self.rules.early_warning
        if ew.enabled:
            m = leq(ew.window_s)
            permitted = self.schedule.permit_for(now, "noise_early_warning") is not None
            line = limit - ew.margin_db
            cond = Condition.CLEAR if permitted else _classify(_value(m), line, 1.0)
            self._update("noise_early_warning", sensor, ew.timing, now, cond,
                         self._figures(m, limit, period, "leq") | {"warn_at": line},
                         f"LAeq {ew.window_s // 60} min {_fmt(m)} dB(A) near the {period} limit {limit:.0f} dB(A)")

        nw = self.rules.night_work
        if nw.enabled:
            m = leq(nw.window_s)
            restricted = self.schedule.restricted(now)
            permit = self.schedule.permit_for(now, "night_work") if restricted else None
            cond = _classify(_value(m), nw.background_db, 2.0) if restricted and permit is None \
                else Condition.CLEAR
            work_figures = self._figures(m, nw.background_db, period, "leq") | {"restricted_hours": restricted}
            cond = self._construction_only(now, nw.window_s, cond, work_figures)
            self._update("night_work", sensor, nw.timing, now, cond,
                         work_figures,
                         f"work in restricted hours without a permit: LAeq {_fmt(m)} dB(A)")

    def _dust(self, now: datetime, sensor: str, index: dict[_Key, Measure]) -> None:
        cfg = self.rules.dust

        def mean(window: int) -> tuple[Measure | None, float | None]:
            m = index.get(_Key(sensor, cfg.quantity, window, "avg"))
            value = convert_dust(m.value, m.unit, cfg.unit) if m is not None and m.value is not None else None
            return m, value

        def figures(m: Measure | None, value: float | None, window: int) -> dict[str, Any]:
            return {"avg": None if value is None else round(value, 4), "limit": cfg.limit, "unit": cfg.unit,
                    "quantity": cfg.quantity, "window_s": window, "samples": m.samples if m else 0}

        def shown(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        if cfg.enabled:
            m, value = mean(cfg.window_s)
            permitted = self.schedule.permit_for(now, "dust_over_limit") is not None
            cond = Condition.CLEAR if permitted else _classify(value, cfg.limit, cfg.hysteresis)
            self._update("dust_over_limit", sensor, cfg.timing, now, cond,
                         figures(m, value, cfg.window_s),
                         f"{cfg.quantity.upper()} {cfg.window_s // 60}-min mean {shown(value)} {cfg.unit} "
                         f"over {cfg.limit} {cfg.unit}")

        ew = self.rules.dust_early_warning
        if ew.enabled:
            m, value = mean(ew.window_s)
            line = cfg.limit * (1.0 - ew.margin_share)
            permitted = self.schedule.permit_for(now, "dust_early_warning") is not None
            cond = Condition.CLEAR if permitted else _classify(value, line, cfg.hysteresis)
            self._update("dust_early_warning", sensor, ew.timing, now, cond,
                         figures(m, value, ew.window_s) | {"warn_at": round(line, 4)},
                         f"{cfg.quantity.upper()} {ew.window_s // 60}-min mean {shown(value)} {cfg.unit} "
                         f"near the limit {cfg.limit} {cfg.unit}")

    def _construction_only(self, now: datetime, window_s: float, cond: Condition,
                           figures: dict[str, Any]) -> Condition:
        """With `rules.noise.night_requires_construction`: a level the microphone does not attribute to
        construction (traffic, aircraft, ...) is no night breach. Without attribution, the level judges."""
        cfg = self.rules.noise
        if cond is Condition.CLEAR or not cfg.night_requires_construction or self.construction_share is None:
            return cond
        share = self.construction_share(now, window_s)
        if share is None:
            return cond
        figures["construction_share"] = round(share, 3)
        return Condition.CLEAR if share < cfg.construction_min_share else cond

    @staticmethod
    def _figures(m: Measure | None, limit: float, period: str, figure: str) -> dict[str, Any]:
        return {
            figure: None if m is None or m.value is None else round(m.value, 2),
            "limit": limit, "period": period, "unit": "dB(A)",
            "window_s": m.window_s if m else None, "samples": m.samples if m else 0,
        }

    def _update(self, kind: str, source: str, timing: Timing, now: datetime, condition: Condition,
                figures: dict[str, Any], message: str) -> None:
        tracker = self._trackers.get((kind, source))
        if tracker is None:
            if condition is not Condition.OVER:
                return
            tracker = self._trackers[(kind, source)] = Tracker(kind, source, timing)
        violation = tracker.update(now, condition, figures, message, elapsed=self.elapsed(now))
        if violation is not None:
            self._out.append(violation)

    def _flush(self) -> None:
        """Report state changes outside the lock (the report plays, publishes, collects evidence)."""
        with self._lock:
            out, self._out = self._out, []
        for violation in out:
            self.report(violation)


def _value(m: Measure | None) -> float | None:
    return None if m is None else m.value


def _fmt(m: Measure | None) -> str:
    return "n/a" if m is None or m.value is None else f"{m.value:.1f}"
