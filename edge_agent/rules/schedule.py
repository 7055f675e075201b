"""Judges a moment against the site's schedule, in the site's own time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from edge_agent.config.schedule import Permit, ScheduleConfig


class Schedule:
    def __init__(self, config: ScheduleConfig, site_timezone: str):
        self.config = config
        self.tz = ZoneInfo(config.timezone or site_timezone)

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)

    def is_night(self, moment: datetime) -> bool:
        t = self.local(moment).time()
        return any(w.contains(t) for w in self.config.night)

    def period(self, moment: datetime) -> str:
        """'night' or 'day', for the noise limit (GB 12523 has just the two)."""
        return "night" if self.is_night(moment) else "day"

    def restricted(self, moment: datetime) -> bool:
        """Night or another quiet window (Shenzhen's noon break): work needs a permit."""
        t = self.local(moment).time()
        return self.is_night(moment) or any(w.contains(t) for w in self.config.quiet)

    def permit_for(self, moment: datetime, kind: str) -> Permit | None:
        """The permit that suspends `kind` at this moment, if the site holds one."""
        local = self.local(moment)
        for permit in self.config.permits:
            if kind not in permit.allows or not (permit.valid_from <= local.date() <= permit.valid_to):
                continue
            if not permit.windows or any(w.contains(local.time()) for w in permit.windows):
                return permit
        return None
