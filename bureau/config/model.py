"""The sections of the bureau's config file (`edge-bureau check-config` prints them)."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import Section, check_timezone
from edge_agent.config.mqtt import MqttConfig

_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


class StoreConfig(Section):
    kind: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="The store: 'sqlite' (embedded, WAL; one machine) or 'postgres' (a city: shared by "
                              "several ingest workers and the console; `edge-bureau migrate` first).")
    data_dir: Path = Field(Path("/var/lib/edge-bureau"),
                           description="Database, evidence files and the command-signing key live here.")
    dsn: str | None = Field(None, description="PostgreSQL connection string (libpq), e.g. 'host=db1 dbname=bureau "
                                              "user=bureau'. Keep the password in ~/.pgpass or PGPASSWORD, not here.")
    pool_size: int = Field(8, ge=1, le=200, description="PostgreSQL connections per process at most.")
    evidence_dir: Path | None = Field(None, description="Evidence files (default DATA_DIR/evidence). With several "
                                                        "ingest workers: one shared volume every worker mounts.")
    dedup_days: int = Field(60, ge=1, le=3650, description="How long message ids are remembered for de-duplication.")

    @model_validator(mode="after")
    def _dsn(self) -> StoreConfig:
        if self.kind == "postgres" and not self.dsn:
            raise ValueError("store.kind 'postgres' needs store.dsn")
        return self


class WebConfig(Section):
    host: str = Field("127.0.0.1", description="Address the web console listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port of the web console.")
    cookie_secure: bool = Field(True, description="Mark the session cookie Secure (leave on; browsers accept it on "
                                                  "http://127.0.0.1 and localhost too).")
    session_hours: float = Field(12, gt=0, le=24 * 30, description="A login lasts this long.")
    login_attempts: int = Field(5, ge=1, le=100, description="Failed logins allowed per user and address ...")
    login_window_s: int = Field(300, ge=10, le=86400, description="... within this many seconds.")


class IngestConfig(Section):
    shared_group: str | None = Field(None, description="Subscribe as $share/GROUP/PREFIX/# (MQTT 5 shared "
                                                       "subscription) so several ingest workers split the load.")
    max_message_kb: int = Field(32768, ge=64, le=262144,
                                description="Larger messages (an evidence clip is the largest) are refused.")
    max_json_kb: int = Field(256, ge=4, le=16384, description="Larger JSON messages (status, events...) are refused.")
    batch_max: int = Field(2000, ge=1, le=100000, description="Messages written per transaction at most.")
    batch_ms: int = Field(50, ge=1, le=5000, description="How long a batch may wait to fill.")
    queue_max: int = Field(50000, ge=100, le=10_000_000, description="Messages held between the network and the store.")
    in_console: bool = Field(True, description="`edge-bureau serve` ingests too. Set false where `edge-bureau ingest` "
                                               "workers do it: the console then connects only to send commands and to "
                                               "hear (not store) what changes, for its live pages.")


class CommandsConfig(Section):
    key_file: Path | None = Field(None, description="The bureau's Ed25519 command-signing key (0600). Default "
                                                   "DATA_DIR/keys/bureau.key, made on first start.")
    lifetime_s: int = Field(120, ge=5, le=300, description="A command expires this long after it is signed "
                                                          "(boxes refuse lifetimes over 300 s).")


class NightWindow(Section):
    start: str = Field(description="HH:MM, site time.")
    end: str = Field(description="HH:MM, site time; before start means past midnight.")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError("expected HH:MM (00:00..23:59)")
        return value

    def contains(self, t: time) -> bool:
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        return start <= t < end if start < end else (t >= start or t < end)


class DustLimit(Section):
    limit: float = Field(gt=0, description="The limit of the mean.")
    unit: str = Field(description="Unit of the limit, as the box reports the quantity (ug/m3, mg/m3).")


class LimitsConfig(Section):
    """Limits drawn on the charts and shown beside the figures (events carry the box's own limit)."""

    noise_day_db: float = Field(70, description="GB 12523-2011 day limit, dB(A).")
    noise_night_db: float = Field(55, description="GB 12523-2011 night limit, dB(A).")
    night: list[NightWindow] = Field(default_factory=lambda: [NightWindow(start="22:00", end="06:00")],
                                     description="Night hours (GB 12523-2011: 22:00-06:00 unless the city says "
                                                 "otherwise).")
    dust: dict[str, DustLimit] = Field(
        default_factory=lambda: {"tsp": DustLimit(limit=0.8, unit="mg/m3"), "pm10": DustLimit(limit=150, unit="ug/m3")},
        description="Per quantity (tsp, pm10, pm2_5): the limit of its mean. UNCONFIRMED defaults: set your city's.")

    def is_night(self, t: time) -> bool:
        return any(w.contains(t) for w in self.night)


class SiteConfig(Section):
    name: str | None = Field(None, description="Name shown for the site (e.g. 南山某项目).")
    limits: LimitsConfig | None = Field(None, description="Limits for this site; default: the top-level limits.")


class BureauConfig(Section):
    mqtt: MqttConfig = Field(default_factory=lambda: MqttConfig(client_id="edge-bureau"),
                             description="The bureau's broker: same keys as the box's mqtt section (TLS, login).")
    store: StoreConfig = Field(default_factory=lambda: StoreConfig())
    web: WebConfig = Field(default_factory=lambda: WebConfig())
    ingest: IngestConfig = Field(default_factory=lambda: IngestConfig())
    commands: CommandsConfig = Field(default_factory=lambda: CommandsConfig())
    timezone: str = Field("Asia/Shanghai", description="Time zone the console shows times in.")
    limits: LimitsConfig = Field(default_factory=lambda: LimitsConfig())
    sites: dict[str, SiteConfig] = Field(default_factory=dict, description="Per-site names and limits.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        check_timezone(value)
        return value

    @model_validator(mode="after")
    def _client(self) -> BureauConfig:
        if self.ingest.shared_group is not None and self.mqtt.protocol == "3.1.1":
            raise ValueError("ingest.shared_group needs MQTT 5 (mqtt.protocol 'auto' or '5')")
        return self

    @property
    def key_file(self) -> Path:
        return self.commands.key_file or self.store.data_dir / "keys" / "bureau.key"

    def site_limits(self, site: str) -> LimitsConfig:
        entry = self.sites.get(site)
        return entry.limits if entry is not None and entry.limits is not None else self.limits

    def site_name(self, site: str) -> str:
        entry = self.sites.get(site)
        return entry.name if entry is not None and entry.name else site
