"""Times are UTC inside the process and ISO 8601 with the site's offset in messages."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo


def iso(moment: datetime | float, tz: str | ZoneInfo = "UTC") -> str:
    """ISO 8601 with offset and milliseconds, e.g. 2026-11-23T12:00:00.000+08:00."""
    if isinstance(moment, (int, float)):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    return moment.astimezone(zone).isoformat(timespec="milliseconds")
