"""`hj212:` — uplink to a bureau platform that speaks HJ 212-2017 over TCP (DOMAIN.md §6)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import SecretRef, Section, check_timezone

KNOWN_CODES = frozenset({
    "a34001", "a34002", "a34004", "a01001", "a01002", "a01006", "a01007", "a01008", "a01010",
    "LA", "Leq", "L5", "L10", "L50", "L90", "L95", "LMx", "LMn", "Ld", "Ln", "Ldn",
})


class Hj212Config(Section):
    """One platform connection. The box is one monitoring point, named by its MN."""

    host: str = Field(..., description="Platform host name or address.")
    port: int = Field(..., ge=1, le=65535, description="Platform TCP port (the bureau assigns it).")
    mn: str = Field(
        ...,
        min_length=1,
        max_length=24,
        pattern=r"^[0-9A-Za-z]+$",
        description="MN, the monitoring point code the platform registered for this box (up to 24 characters).",
    )
    pw: str = Field(
        "123456",
        max_length=6,
        pattern=r"^[0-9A-Za-z]*$",
        description="PW, the access password (HJ 212-2017: 6 characters; '123456' is the usual default).",
    )
    pw_secret: SecretRef | None = Field(
        None, description="Take PW from a file or environment variable instead: {file: PATH} or {env: VAR}."
    )
    st: str = Field(
        "39",
        pattern=r"^\d{2}$",
        description="ST, system code: 39 = construction-site dust source (HJ 212-2017), noise in the same packet.",
    )
    reply_st: str = Field(
        "91", pattern=r"^\d{2}$", description="ST of the box's answers (9011/9012/9013): 91 = system interaction."
    )
    dust_unit: Literal["mg/m3", "ug/m3"] = Field(
        "mg/m3",
        description="Unit the platform wants for a34001/a34002/a34004 (HJ 212 tables use mg/m3; some platforms ug/m3).",
    )
    send_flags: bool = Field(True, description="Send a `-Flag` (N, F, M, S, D, C, T, B) with every value.")
    noise_suffix: Literal["Data", "Avg"] = Field(
        "Data",
        description=(
            "Field suffix of noise figures in minute/hour/day data, e.g. Leq-Data "
            "(HJ 212-2017 'data of the noise period'; some platforms want Leq-Avg). UNCONFIRMED."
        ),
    )
    codes: list[str] | None = Field(
        None, description="Send only these codes (e.g. [a34001, a34002, LA, Leq]); omit to send every known code."
    )
    realtime: bool = Field(True, description="Send real-time data (CN 2011) every rtd_interval_s.")
    rtd_interval_s: float = Field(
        30,
        ge=1,
        le=3600,
        description=(
            "RtdInterval: seconds between real-time packets; the platform may change it with CN 1062 "
            "(30-3600 s accepted from it, UNCONFIRMED). Below 30 s only for bench tests."
        ),
    )
    rtd_max_age_s: float = Field(
        120, gt=0, description="A reading older than this is not sent as real-time data."
    )
    minute_interval_min: int = Field(
        1,
        ge=1,
        le=60,
        description="MinInterval: minutes per minute-data (2051) block, as the measures produce them.",
    )
    send_minute: bool = Field(True, description="Send minute data (CN 2051).")
    send_hourly: bool = Field(True, description="Send hourly data (CN 2061).")
    send_daily: bool = Field(True, description="Send daily data (CN 2031).")
    data_time_label: Literal["start", "end"] = Field(
        "start",
        description=(
            "DataTime of a minute/hour/day record: the start of its period (usual practice) "
            "or its end. UNCONFIRMED."
        ),
    )
    timezone: str = Field(
        "Asia/Shanghai", description="Time zone of QN, DataTime and SystemTime (platforms use Beijing time)."
    )
    request_ack: bool = Field(
        True,
        description=(
            "Ask the platform to answer stored data (Flag A bit, answer CN 9014) and keep it in the "
            "outbox until answered. Turn off for platforms that never answer; then data counts as "
            "delivered once written to the socket."
        ),
    )
    ack_timeout_s: float = Field(
        10, gt=0, le=300, description="OverTime: seconds to wait for the platform's answer before resending."
    )
    retries: int = Field(
        3, ge=0, le=20, description="ReCount: resends of one packet before the connection is dropped and remade."
    )
    connect_timeout_s: float = Field(10, gt=0, le=120, description="TCP connect timeout.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay; doubles each try, with jitter.")
    reconnect_max_s: float = Field(120.0, gt=0, description="Longest reconnect delay.")
    allow_set_time: bool = Field(
        False,
        description=(
            "Obey the platform's set-time command (CN 1012) by offsetting the uplink's clock. Off: the "
            "box keeps its NTP time and refuses (QnRtn=2)."
        ),
    )
    outbox_max_mb: int = Field(
        256, ge=1, description="Cap on the unsent backlog (about 1 MB a day of minute data); oldest dropped first."
    )
    outbox_file: str = Field("hj212-outbox.sqlite", description="Backlog file name inside storage.data_dir.")

    _known_zone = field_validator("timezone")(check_timezone)

    @field_validator("codes")
    @classmethod
    def _known_codes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            unknown = sorted(set(value) - KNOWN_CODES)
            if unknown:
                raise ValueError(f"unknown HJ 212 code(s) {unknown}; known: {sorted(KNOWN_CODES)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Hj212Config:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    def password(self) -> str:
        """PW as sent: from pw_secret when given, else pw."""
        return self.pw_secret.resolve() if self.pw_secret is not None else self.pw
