"""Clock-aligned blocks and the night schedule, judged in the site's time zone.

Only called when a block or a day/night span rolls over (a few times a day per sensor), so
per-sample work stays a float comparison.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from edge_agent.timefmt import parse_hhmm


class SiteCalendar:
    """Local days, clock-aligned blocks, and night spans for one site."""

    def __init__(self, timezone: str, night_windows: list[tuple[str, str]] | tuple[tuple[str, str], ...]):
        self.tz = ZoneInfo(timezone)
        self.night = [(parse_hhmm(a), parse_hhmm(b)) for a, b in night_windows]

    def _epoch(self, d: date, t: time) -> float:
        return datetime.combine(d, t, self.tz).timestamp()

    def block_bounds(self, period_s: int, ts: float) -> tuple[float, float]:
        """[start, end) epoch bounds of the local clock-aligned block of `period_s` holding `ts`.

        86400 is the local calendar day (23 or 25 h on DST days); smaller periods must divide a
        day and are aligned to local midnight.
        """
        local = datetime.fromtimestamp(ts, self.tz)
        day = local.date()
        midnight = self._epoch(day, time(0, 0))
        if period_s >= 86400:
            return midnight, self._epoch(day + timedelta(days=1), time(0, 0))
        into = ts - midnight
        start = midnight + (into // period_s) * period_s
        return start, start + period_s

    def night_spans(self, day_start: float) -> list[tuple[float, float]]:
        """Night spans [start, end) within the local day that starts at `day_start`."""
        d = datetime.fromtimestamp(day_start, self.tz).date()
        day_end = self._epoch(d + timedelta(days=1), time(0, 0))
        spans: list[tuple[float, float]] = []
        for a, b in self.night:
            if a < b:
                spans.append((self._epoch(d, a), self._epoch(d, b)))
            elif a > b:  # wraps midnight: the morning part and the evening part of this day
                spans.append((day_start, self._epoch(d, b)))
                spans.append((self._epoch(d, a), day_end))
            # a == b: an empty window
        spans = [(s, e) for s, e in sorted(spans) if e > s]
        merged: list[tuple[float, float]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        return merged

    def is_night(self, ts: float) -> tuple[bool, float]:
        """Whether `ts` is at night, and the epoch at which that answer next changes."""
        day_start, day_end = self.block_bounds(86400, ts)
        for s, e in self.night_spans(day_start):
            if ts < s:
                return False, s
            if ts < e:
                return True, e
        return False, day_end
