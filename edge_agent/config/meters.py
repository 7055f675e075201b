"""`meters:` — the RS-485 Modbus meters (noise, dust, weather) wired to this box.

Each entry names a serial port, the bus settings, the meter's Modbus address and a profile:
a YAML register map, either one bundled in config/profiles/ (by name) or a file path.
Several meters may share one port (one RS-485 bus): they then must agree on baud, parity
and stop bits, and need distinct addresses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from drivers.modbus.profile import BAUD_RATES, ProfileError, load_profile
from edge_agent.config.base import Section
from edge_agent.config.site import ID_PATTERN


class MeterConfig(Section):
    id: str = Field(
        ...,
        pattern=ID_PATTERN,
        description="Sensor id: names this meter in readings, telemetry and health (e.g. 'noise1').",
    )
    port: str = Field(
        ...,
        min_length=1,
        description="Serial device of the RS-485 adapter; prefer a stable /dev/serial/by-id/... path.",
    )
    baud: int = Field(
        9600,
        description=f"Baud rate, one of {BAUD_RATES}. DOMAIN.md §5: Renke noise meters ship at 4800, "
        "PM sensors at 9600 (UNCONFIRMED per unit: `edge-fw scan` finds it).",
    )
    parity: Literal["N", "E", "O"] = Field("N", description="Parity: N (none, the usual 8N1), E or O.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits, 1 or 2.")
    address: int = Field(
        1,
        ge=1,
        le=255,
        description="Modbus address of the meter (1..247; some monitors answer only 250/0xFA or 255/0xFF).",
    )
    profile: str = Field(
        ...,
        min_length=1,
        description="Register map: a bundled profile name (renke_rs_zs_n01, renke_rs_pm_n01, "
        "generic_dust_monitor) or a path to a profile YAML file.",
    )
    poll_interval_s: float = Field(
        1.0,
        ge=0.2,
        le=3600,
        description="Seconds between polls. Noise figures assume 1-second samples (GB 12523 LAeq from 1 s levels).",
    )
    timeout_s: float = Field(
        0.5, gt=0.01, le=10, description="Seconds to wait for an answer before counting a timeout."
    )
    retries: int = Field(1, ge=0, le=5, description="Immediate retries after a timeout, CRC error or garbage.")
    gap_s: float = Field(
        0.05,
        ge=0,
        le=2,
        description="Silence between requests on this bus (the largest value among meters on a port wins).",
    )
    stale_after_s: float | None = Field(
        None,
        gt=0,
        description="Flag a value as stale when unchanged for this long; default: the profile's per-field value.",
    )
    enabled: bool = Field(True, description="Set false to keep the entry but not poll the meter.")

    @field_validator("baud")
    @classmethod
    def _standard_baud(cls, value: int) -> int:
        if value not in BAUD_RATES:
            raise ValueError(f"baud must be one of {', '.join(map(str, BAUD_RATES))}")
        return value

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, value: str) -> str:
        try:
            load_profile(value)
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        return value


def _check_buses(meters: Sequence[MeterConfig]) -> list[MeterConfig]:
    """Meters on one port share a bus: same line settings, distinct addresses; ids unique."""
    ids: set[str] = set()
    buses: dict[str, MeterConfig] = {}
    addresses: dict[tuple[str, int], str] = {}
    for m in meters:
        if m.id in ids:
            raise ValueError(f"meter id {m.id!r} is used twice")
        ids.add(m.id)
        if not m.enabled:
            continue
        first = buses.setdefault(m.port, m)
        if (m.baud, m.parity, m.stopbits) != (first.baud, first.parity, first.stopbits):
            raise ValueError(
                f"meters {first.id!r} and {m.id!r} share {m.port} but differ in line settings "
                f"({first.baud} {first.parity}{first.stopbits} vs {m.baud} {m.parity}{m.stopbits}); "
                f"one bus has one baud rate and parity"
            )
        other = addresses.setdefault((m.port, m.address), m.id)
        if other != m.id:
            raise ValueError(f"meters {other!r} and {m.id!r} both use address {m.address} on {m.port}")
    return list(meters)


Meters = Annotated[list[MeterConfig], AfterValidator(_check_buses)]
