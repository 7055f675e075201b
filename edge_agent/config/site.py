"""`site:` and `device:` — who this box is and where it stands."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge_agent.config.base import Section, check_timezone

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Location(Section):
    latitude: float | None = Field(None, ge=-90, le=90, description="WGS-84 latitude in degrees.")
    longitude: float | None = Field(None, ge=-180, le=180, description="WGS-84 longitude in degrees.")
    address: str = Field("", description="Street address, as the bureau lists the site.")


class SiteConfig(Section):
    id: str = Field(
        ...,
        pattern=ID_PATTERN,
        description="Site id as registered with the bureau; becomes part of every MQTT topic.",
    )
    name: str = Field("", description="Human-readable site name, shown on snapshots and in status.")
    timezone: str = Field(
        "Asia/Shanghai",
        description="IANA time zone in which schedules (night hours, permits) are judged.",
    )
    location: Location = Field(default_factory=Location, description="Where the site is.")

    _known_zone = field_validator("timezone")(check_timezone)


class DeviceConfig(Section):
    id: str = Field(
        ...,
        pattern=ID_PATTERN,
        description="This box's id within the site; becomes part of every MQTT topic.",
    )
