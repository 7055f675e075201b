"""From the agent's Readings and Measures to HJ 212-2017 codes, fields and CP items.

Codes (HJ 212-2017 Appendix B): a34001 TSP, a34002 PM10, a34004 PM2.5, a01001 temperature,
a01002 humidity, a01006 pressure (kPa), a01007 wind speed, a01008 wind direction, a01010
Ringelmann; noise LA, Leq, L5..L95, LMx, LMn, Ld, Ln, Ldn.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from drivers.types import Quality, Reading
from edge_agent.hj212.codec import CpItem, DataFlag
from edge_agent.types import Measure

log = logging.getLogger(__name__)

QUANTITY_CODES: dict[str, str] = {
    "tsp": "a34001",
    "pm10": "a34002",
    "pm2_5": "a34004",
    "noise_la": "LA",
    "temperature": "a01001",
    "humidity": "a01002",
    "pressure": "a01006",
    "wind_speed": "a01007",
    "wind_direction": "a01008",
    "ringelmann": "a01010",
}
DUST = frozenset({"tsp", "pm10", "pm2_5"})
# Noise figures each have their own code; the value goes in `<code>-Data` (HJ 212-2017:
# "noise data of the period"), configurable because some platforms expect `-Avg`.
NOISE_FIGURE_CODES: dict[str, str] = {
    "leq": "Leq", "l5": "L5", "l10": "L10", "l50": "L50", "l90": "L90", "l95": "L95",
    "lmax": "LMx", "lmin": "LMn", "ld": "Ld", "ln": "Ln", "ldn": "Ldn",
}
STAT_SUFFIX: dict[str, str] = {"avg": "Avg", "min": "Min", "max": "Max"}
# Order of items in a packet: dust first, then noise, then weather (as platforms show them).
CODE_ORDER = ("a34001", "a34002", "a34004", "LA", "Leq", "L5", "L10", "L50", "L90", "L95", "LMx",
              "LMn", "Ld", "Ln", "Ldn", "a01001", "a01002", "a01006", "a01007", "a01008", "a01010")
DECIMALS = {"LA": 1, "a01001": 1, "a01002": 1, "a01006": 2, "a01007": 1, "a01008": 0, "a01010": 1}
QUALITY_FLAGS = {
    Quality.OK: DataFlag.NORMAL,
    Quality.OUT_OF_RANGE: DataFlag.OVER_RANGE,
    Quality.COMM_ERROR: DataFlag.COMM_ERROR,
    Quality.STALE: DataFlag.COMM_ERROR,  # the meter stopped answering with fresh values
}
_FIGURE_RANK = {f: i for i, f in enumerate(("avg", "min", "max", "leq", "l5", "l10", "l50", "l90", "l95",
                                              "lmax", "lmin", "ld", "ln", "ldn"))}
DAY_FIGURES = frozenset({"ld", "ln", "ldn"})


@dataclass(frozen=True)
class MappingOptions:
    """How this platform wants its values: dust unit, flags, the noise field suffix, codes."""

    dust_unit: str = "mg/m3"  # or "ug/m3"
    send_flags: bool = True
    noise_suffix: str = "Data"
    codes: frozenset[str] | None = None  # None: every code we know
    timezone: str = "Asia/Shanghai"

    def wanted(self, code: str) -> bool:
        return self.codes is None or code in self.codes


def data_time(when: datetime, tz: str) -> str:
    """HJ 212 times are local (Beijing) time, `YYYYMMDDhhmmss`."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: times inside the agent are timezone-aware UTC")
    return when.astimezone(ZoneInfo(tz)).strftime("%Y%m%d%H%M%S")


def _norm_unit(unit: str) -> str:
    return (unit.strip().lower().replace("µ", "u").replace("μ", "u").replace("³", "3")
            .replace(" ", ""))


_warned_units: set[tuple[str, str]] = set()


def convert(quantity: str, value: float, unit: str, opts: MappingOptions) -> float | None:
    """The value in the platform's unit, or None when our unit is not one we can convert."""
    u = _norm_unit(unit)
    if quantity in DUST:
        factors = {"ug/m3": 1e-3, "mg/m3": 1.0}
        target = _norm_unit(opts.dust_unit)
        if u in factors and target in factors:
            return value * factors[u] / factors[target]
    elif quantity == "pressure":
        factors = {"pa": 1e-3, "hpa": 0.1, "kpa": 1.0, "mbar": 0.1}
        if u in factors:
            return value * factors[u]
    else:
        return value
    if (quantity, unit) not in _warned_units:
        _warned_units.add((quantity, unit))
        log.warning("hj212: cannot convert %s from unit %r; its value is not sent (flag only)", quantity, unit)
    return None


def fmt(code: str, value: float, opts: MappingOptions) -> str:
    if code in ("a34001", "a34002", "a34004"):
        digits = 3 if _norm_unit(opts.dust_unit) == "mg/m3" else 1
    else:
        digits = DECIMALS.get(code, 1)
    text = f"{value:.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def _ordered(items: dict[str, list[tuple[str, str]]]) -> list[CpItem]:
    rank = {c: i for i, c in enumerate(CODE_ORDER)}
    return [tuple(items[c]) for c in sorted(items, key=lambda c: (rank.get(c, len(rank)), c))]


def realtime_cp(readings: Iterable[Reading], when: datetime, opts: MappingOptions) -> tuple[CpItem, ...]:
    """CP of a 2011 packet: `DataTime`, then `<code>-Rtd` (and `-Flag`) per quantity.

    One value per code: the latest reading of each quantity (the box is one monitoring
    point; several sensors of one quantity would need several MNs).
    """
    latest: dict[str, Reading] = {}
    for r in readings:
        code = QUANTITY_CODES.get(r.quantity)
        if code is None or not opts.wanted(code):
            continue
        if code not in latest or r.time >= latest[code].time:
            latest[code] = r
    items: dict[str, list[tuple[str, str]]] = {}
    for code, r in latest.items():
        value = r.value
        if value is not None and math.isfinite(value):
            value = convert(r.quantity, value, r.unit, opts)
        fields: list[tuple[str, str]] = []
        if value is not None and math.isfinite(value):
            fields.append((f"{code}-Rtd", fmt(code, value, opts)))
        flag = QUALITY_FLAGS.get(r.quality, DataFlag.FAULT)
        if value is None and flag is DataFlag.NORMAL:
            flag = DataFlag.FAULT
        if opts.send_flags:
            fields.append((f"{code}-Flag", flag.value))
        if fields:
            items[code] = fields
    if not items:
        return ()
    return (("DataTime", data_time(when, opts.timezone)),), *_ordered(items)


def measure_flag(m: Measure) -> DataFlag:
    """N when the figure is valid; F when nothing was measured at all; B otherwise
    (mostly samples lost to communication errors). UNCONFIRMED mapping; platforms differ."""
    if m.valid and m.value is not None:
        return DataFlag.NORMAL
    if m.samples == 0 and m.invalid == 0:
        return DataFlag.STOPPED
    return DataFlag.COMM_ERROR


def period_cp(measures: Iterable[Measure], period_s: int, when: datetime,
              opts: MappingOptions) -> tuple[CpItem, ...]:
    """CP of a 2051/2061/2031 packet: DataTime, then per code its `-Avg/-Min/-Max` (dust,
    weather) or `-Data` (noise figures), with one `-Flag` per code."""
    items: dict[str, list[tuple[str, str]]] = {}
    flags: dict[str, DataFlag] = {}
    for m in sorted(measures, key=lambda m: (m.sensor_id, m.quantity, _FIGURE_RANK.get(m.figure, 99))):
        if m.window_s != period_s and m.figure not in DAY_FIGURES:
            continue
        if m.quantity == "noise_la" and m.figure in NOISE_FIGURE_CODES:
            code, suffix = NOISE_FIGURE_CODES[m.figure], opts.noise_suffix
        elif m.quantity in QUANTITY_CODES and m.figure in STAT_SUFFIX:
            code, suffix = QUANTITY_CODES[m.quantity], STAT_SUFFIX[m.figure]
        else:
            continue
        if not opts.wanted(code):
            continue
        field_name = f"{code}-{suffix}"
        fields = items.setdefault(code, [])
        if any(k == field_name for k, _ in fields):
            continue  # a second sensor of the same quantity: the first (by sensor id) is sent
        flag = measure_flag(m)
        value = m.value
        if value is not None and math.isfinite(value):
            value = convert(m.quantity, value, m.unit, opts)
            if value is not None and math.isfinite(value):
                fields.append((field_name, fmt(code, value, opts)))
        # The code's flag is the worst of its figures' flags.
        if code not in flags or flags[code] is DataFlag.NORMAL:
            flags[code] = flag
    out: dict[str, list[tuple[str, str]]] = {}
    for code, fields in items.items():
        if opts.send_flags:
            fields = [*fields, (f"{code}-Flag", flags[code].value)]
        if fields:
            out[code] = fields
    if not out:
        return ()
    return (("DataTime", data_time(when, opts.timezone)),), *_ordered(out)
