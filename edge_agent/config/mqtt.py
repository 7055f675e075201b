"""`mqtt:` — the link to the bureau's broker."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.config.base import SecretRef, Section


class TlsConfig(Section):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate.")
    cert_file: Path | None = Field(None, description="Client certificate, for brokers that require one.")
    key_file: Path | None = Field(None, description="Private key of the client certificate.")
    insecure_skip_verify: bool = Field(
        False, description="Do not check the broker's host name. Only for bench tests."
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(Section):
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    tls: TlsConfig | None = Field(None, description="Use TLS; omit for a plain connection.")
    username: str | None = Field(None, description="User name, if the broker wants one.")
    password: SecretRef | None = Field(
        None, description="Where the password comes from: {file: PATH} or {env: VAR}. Never inline."
    )
    topic_prefix: str = Field("edge/v1", description="Topics are PREFIX/SITE/DEVICE/...")
    keepalive_s: int = Field(
        45,
        ge=5,
        le=3600,
        description="MQTT keepalive in seconds: after this long without traffic the box sends a PINGREQ, and the "
        "broker drops a box silent for 1.5 times it. Many mobile carriers' NATs drop a TCP connection idle "
        "for 60-120 s (UNCONFIRMED: measure your carrier); 45 s keeps a packet each way well inside 60 s "
        "while costing about one ping round trip a minute (a few hundred bytes with TCP/IP headers) "
        "and finds a dead link within about two keepalives.",
    )
    client_id: str | None = Field(None, description="MQTT client id; default SITE-DEVICE.")
    protocol: Literal["auto", "3.1.1", "5"] = Field(
        "auto", description="MQTT version; 'auto' tries 5 and falls back to 3.1.1."
    )
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay; doubles each try.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay.")
    max_inflight: int = Field(
        20, ge=1, le=1000, description="Messages sent but not yet acknowledged by the broker."
    )
    max_inflight_mb: float = Field(
        2.0, gt=0, le=256,
        description="Bytes sent but not yet acknowledged, in MB: bounds memory when the backlog holds video clips "
        "(one larger message still goes alone). 2 MB is 8 evidence parts of 256 kB: 20 MB/s at a 100-ms round trip.",
    )

    @model_validator(mode="after")
    def _auth(self) -> MqttConfig:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self
