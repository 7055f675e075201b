"""`schedule:` — when the site may make noise: night hours, the noon break, permits.

Defaults are Shenzhen's (../shared/DOMAIN.md §1): noisy construction is banned 23:00–07:00
and 12:00–14:00 in built-up areas unless the site holds a permit for that window (Shenzhen
Environmental Noise Pollution Prevention Regulations, 2020 revision, as reported; the exact
hours are UNCONFIRMED against the primary text — set them from your city's rule). The
national default night (GB 12523-2011 via the noise law) is 22:00–06:00.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import Section, check_timezone
from edge_agent.timefmt import parse_hhmm


class TimeWindow(Section):
    """A daily window in the site's local time; it may run past midnight (23:00–07:00)."""

    start: str = Field(..., description="Start, HH:MM local time (inclusive).")
    end: str = Field(
        ..., description="End, HH:MM local time (exclusive; 24:00 is the end of the day); before start means the "
        "next day.",
    )

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        parse_hhmm(value)
        return value

    def contains(self, local: dt.time) -> bool:
        start, end = parse_hhmm(self.start), parse_hhmm(self.end)
        if start == end:
            return True  # a 24-hour window
        if start < end:
            return start <= local < end
        return local >= start or local < end


PERMIT_ALLOWS = ("night_work", "noise_over_limit", "night_lmax", "noise_early_warning", "dust_over_limit",
                 "dust_early_warning")


class Permit(Section):
    """A permit for work in restricted hours (major projects, continuous pours, emergencies)."""

    id: str = Field(..., description="Permit number as issued by the authority.")
    valid_from: dt.date = Field(..., description="First day the permit is valid (local date).")
    valid_to: dt.date = Field(..., description="Last day the permit is valid (local date, inclusive).")
    windows: list[TimeWindow] = Field(
        default_factory=list, description="Hours it covers; empty means all restricted hours."
    )
    allows: list[str] = Field(
        default_factory=lambda: ["night_work"],
        description=f"Violation kinds it suspends: any of {', '.join(PERMIT_ALLOWS)}.",
    )

    @field_validator("allows")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        for value in values:
            if value not in PERMIT_ALLOWS:
                raise ValueError(f"unknown kind {value!r}; one of {', '.join(PERMIT_ALLOWS)}")
        return values

    @model_validator(mode="after")
    def _order(self) -> Permit:
        if self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self


class ScheduleConfig(Section):
    timezone: str | None = Field(
        None, description="Time zone for these hours; default: site.timezone."
    )
    night: list[TimeWindow] = Field(
        default_factory=lambda: [TimeWindow(start="23:00", end="07:00")],
        description=(
            "Night hours: the night noise limit applies and work needs a permit. Shenzhen: 23:00–07:00 "
            "(UNCONFIRMED); national default 22:00–06:00."
        ),
    )
    quiet: list[TimeWindow] = Field(
        default_factory=lambda: [TimeWindow(start="12:00", end="14:00")],
        description="Other hours when noisy work needs a permit (Shenzhen noon break 12:00–14:00).",
    )
    permits: list[Permit] = Field(default_factory=list, description="Permits held by the site.")

    _known_zone = field_validator("timezone")(check_timezone)
