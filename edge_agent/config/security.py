"""`bureau:` — whose commands the box obeys; `evidence:` — how it signs what it saw."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from edge_agent.config.base import Section
from edge_agent.config.site import ID_PATTERN

KNOWN_COMMANDS = ("shout", "relay", "spray", "strobe", "snapshot", "relearn_view", "ping",
                  *("config", "model", "logs", "doctor"),  # fleet operations: edge_agent/fleet/
                  *("talk", "listen"))  # two-way talk: edge_agent/voice/
# Commands that switch one relay: `relay` names it in its arguments, the others are aliases.
RELAY_ALIASES = {"spray": "spray", "strobe": "strobe"}


class TrustedKey(Section):
    """One bureau public key. Commands name the key they were signed with by its key id."""

    name: str = Field(..., min_length=1, description="A label for people, e.g. 'szeb-2026'.")
    public_key: str | None = Field(
        None, description="Base64 of the 32 raw bytes of the Ed25519 public key (as `edge-fw keys` prints it)."
    )
    file: Path | None = Field(None, description="A file holding the public key (base64 or PEM).")

    @model_validator(mode="after")
    def _one_source(self) -> TrustedKey:
        if (self.public_key is None) == (self.file is None):
            raise ValueError("give exactly one of 'public_key' or 'file'")
        if self.public_key is not None:
            from edge_agent.security.keys import KeyFileError, parse_public_key

            try:
                parse_public_key(self.public_key)
            except KeyFileError as exc:
                raise ValueError(str(exc)) from None
        return self


class BureauConfig(Section):
    trusted_keys: list[TrustedKey] = Field(
        default_factory=list,
        description="Public keys whose signed commands the box obeys; with none, every command is refused.",
    )
    commands: list[str] = Field(
        default_factory=lambda: list(KNOWN_COMMANDS),
        description="Commands the bureau may send; any other name is refused as unknown.",
    )
    relays_allowed: list[Annotated[str, StringConstraints(pattern=ID_PATTERN)]] = Field(
        default_factory=lambda: ["spray", "strobe"],
        description="Relay ids (see `relays`) the bureau may switch with the `relay` command or its aliases "
        "`spray` and `strobe`; any other relay is refused with `relay_not_allowed`. The relays' "
        "max_on_s / min_off_s protection applies to bureau commands too.",
    )
    max_command_lifetime_s: int = Field(
        300, ge=1, le=3600,
        description="Longest allowed expires_at - issued_at; longer-lived commands are refused.",
    )
    clock_skew_s: int = Field(
        30, ge=0, le=600, description="Tolerance between the bureau's clock and the box's, in seconds."
    )
    require_synchronized_clock: bool = Field(
        False,
        description=(
            "Refuse every command while the box clock is not NTP-synchronised. Off: commands are "
            "checked against the local clock and the ack says the clock is unsynchronised."
        ),
    )
    max_payload_bytes: int = Field(
        8192, ge=256, le=1_048_576, description="Larger command messages are refused unread."
    )
    refusal_acks_per_minute: int = Field(
        120, ge=1,
        description="Cap on refusal acks (a flood of forgeries must not fill the outbox); the rest are counted.",
    )

    @field_validator("commands")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in KNOWN_COMMANDS]
        if unknown:
            raise ValueError(f"unknown command(s) {', '.join(unknown)}; known: {', '.join(KNOWN_COMMANDS)}")
        return value


class EvidenceConfig(Section):
    device_key: Path | None = Field(
        None, description="The box's Ed25519 signing key; default DATA_DIR/keys/device.key, made on first start."
    )
    readings_window_s: int = Field(
        300, ge=10, le=86400, description="Seconds of samples before a violation that go into its bundle."
    )
    publish: bool = Field(True, description="Send each bundle to the bureau over MQTT (files, then manifest).")
