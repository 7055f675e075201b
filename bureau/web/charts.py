"""Line charts as SVG, drawn on the server: no chart library, no script, prints as it shows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from html import escape

W, H = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 34, 30


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (epoch s, value); None breaks the line
    color: str
    width: float = 1.6
    dash: str = ""
    max_gap_s: float | None = 180.0  # a longer gap breaks the line (missing minutes); None for step lines


@dataclass
class Chart:
    start: float
    end: float
    unit: str
    series: list[Series] = field(default_factory=list)
    limits: list[Series] = field(default_factory=list)  # drawn dashed, usually step lines
    bands: list[tuple[float, float]] = field(default_factory=list)  # shaded spans (night)
    y_min: float | None = None
    css_id: str = ""


def _nice(lo: float, hi: float) -> tuple[float, float, float]:
    if hi <= lo:
        hi = lo + 1
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 5))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def render(chart: Chart, tz: tzinfo, *, width: int = W, height: int = H) -> str:
    values = [v for s in (*chart.series, *chart.limits) for _, v in s.points if v is not None]
    lo = min(values) if values else 0.0
    hi = max(values) if values else 1.0
    if chart.y_min is not None:
        lo = min(lo, chart.y_min)
    y0, y1, ystep = _nice(lo - (hi - lo) * 0.05, hi + (hi - lo) * 0.05)
    if chart.y_min is not None:
        y0 = max(y0, chart.y_min)
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM
    span = max(chart.end - chart.start, 1)

    def x(t: float) -> float:
        return LEFT + (t - chart.start) / span * pw

    def y(v: float) -> float:
        return TOP + (1 - (v - y0) / (y1 - y0)) * ph

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg"'
           + (f' id="{escape(chart.css_id)}"' if chart.css_id else "") + ">"]
    for a, b in chart.bands:
        a, b = max(a, chart.start), min(b, chart.end)
        if b > a:
            out.append(f'<rect x="{x(a):.1f}" y="{TOP}" width="{x(b) - x(a):.1f}" height="{ph}" fill="#e8ecf7"/>')
    v = y0
    while v <= y1 + ystep / 2:
        yy = y(v)
        out.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#dde2e8"/>')
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11" fill="#555">'
                   f"{v:g}</text>")
        v += ystep
    # Time ticks on the local clock: every 3 h for a day, finer for shorter spans.
    tick = next((c for c in (5, 10, 30, 60, 300, 900, 1800, 3600, 10800) if span / c <= 9), 21600)
    offset = datetime.fromtimestamp(chart.start, tz).utcoffset()
    off = offset.total_seconds() if offset is not None else 0
    t = math.ceil((chart.start + off) / tick) * tick - off
    fmt = "%H:%M" if tick >= 60 else "%H:%M:%S"
    while t <= chart.end:
        xx = x(t)
        lab = datetime.fromtimestamp(t, tz).strftime(fmt)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#eef0f3"/>')
        out.append(f'<text x="{xx:.1f}" y="{height - 10}" text-anchor="middle" font-size="11" fill="#555">{lab}</text>')
        t += tick
    out.append(f'<text x="{LEFT - 6}" y="{TOP - 8}" text-anchor="end" font-size="11" fill="#555">'
               f"{escape(chart.unit)}</text>")
    for s in (*chart.limits, *chart.series):
        for path in _paths(s.points, x, y, s.max_gap_s):
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<path d="{path}" fill="none" stroke="{s.color}" stroke-width="{s.width}"{dash} '
                       'stroke-linejoin="round"/>')
    # Legend.
    lx: float = LEFT + 8
    for s in (*chart.series, *chart.limits):
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="14" y2="14" stroke="{s.color}" stroke-width="2.5"{dash}/>')
        out.append(f'<text x="{lx + 22}" y="18" font-size="12" fill="#222">{escape(s.name)}</text>')
        lx += 36 + sum(13 if ord(ch) > 0x2E80 else 7.2 for ch in s.name)
    if not values:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="14" fill="#888">—</text>')
    out.append("</svg>")
    return "".join(out)


def _paths(points: Sequence[tuple[float, float | None]], x: Callable[[float], float], y: Callable[[float], float],
           max_gap: float | None) -> list[str]:
    paths: list[str] = []
    cur: list[str] = []
    prev_t = None
    for t, v in points:
        gap = max_gap is not None and prev_t is not None and t - prev_t > max_gap
        if v is None or gap:
            if len(cur) > 1:
                paths.append("M" + "L".join(cur))
            cur = []
        if v is not None:
            cur.append(f"{x(t):.1f},{y(v):.1f}")
        prev_t = t
    if len(cur) > 1:
        paths.append("M" + "L".join(cur))
    elif len(cur) == 1:
        px, py = cur[0].split(",")
        paths.append(f"M{px},{py}L{float(px) + 1:.1f},{py}")
    return paths


def step_line(start: float, end: float, value_at: Callable[[float], float],
              step_s: float = 60.0) -> list[tuple[float, float | None]]:
    """A limit that changes with time (day/night), sampled at its change points."""
    pts: list[tuple[float, float | None]] = []
    t = start
    last = None
    while t <= end:
        v = value_at(t)
        if v != last:
            if last is not None:
                pts.append((t, last))
            pts.append((t, v))
            last = v
        t += step_s
    pts.append((end, last))
    return pts
