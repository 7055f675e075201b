"""`site:` and `device:` — who this box is and where it stands."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from edge_agent.config.base import Section, check_timezone

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Location(Section):
    """Where the site is: in the retained status and every evidence manifest, so the bureau's city map
    (一张图) can place the site and its cameras."""

    latitude: float | None = Field(None, ge=-90, le=90, description="Latitude in degrees, in `datum`.")
    longitude: float | None = Field(None, ge=-180, le=180, description="Longitude in degrees, in `datum`.")
    datum: Literal["WGS-84", "GCJ-02", "BD-09"] = Field(
        "WGS-84",
        description="Coordinate system of latitude/longitude: WGS-84 (GPS, the default), GCJ-02 (Amap/Gaode and "
        "Tencent maps, the datum of maps published in China) or BD-09 (Baidu maps). A point copied from a "
        "Chinese web map is GCJ-02 or BD-09 and lies some hundred metres off its WGS-84 position: say which.",
    )
    address: str = Field("", description="Street address, as the bureau lists the site.")

    def as_json(self) -> dict[str, Any]:
        return {"latitude": self.latitude, "longitude": self.longitude, "datum": self.datum,
                "address": self.address}


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
