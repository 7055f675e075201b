"""Times are UTC inside the process and ISO 8601 with the site's offset in messages."""

from __future__ import annotations

import re
from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def parse_hhmm(text: str) -> time:
    """A local time of day, "HH:MM" on the 24-h clock; "24:00" is the midnight that ends a day.

    The one parser for schedules (config) and night spans (figures): they must agree on what a
    window such as 22:00-24:00 means.
    """
    match = _HHMM.match(text)
    if not match:
        raise ValueError(f"expected HH:MM (24 h, 00:00 to 24:00), got {text!r}")
    return time(0, 0) if text == "24:00" else time(int(match.group(1)), int(match.group(2)))


def iso(moment: datetime | float, tz: str | ZoneInfo = "UTC") -> str:
    """ISO 8601 with offset and milliseconds, e.g. 2026-11-23T12:00:00.000+08:00."""
    if isinstance(moment, (int, float)):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    return moment.astimezone(zone).isoformat(timespec="milliseconds")
