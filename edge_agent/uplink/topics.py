"""The MQTT topic layout (../shared/DESIGN.md): PREFIX/SITE/DEVICE/<leaf>."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str
    site: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix.rstrip('/')}/{self.site}/{self.device}"

    def full(self, leaf: str) -> str:
        return f"{self.base}/{leaf}"

    # The leaves every box publishes or listens on.
    STATUS = "status"
    TELEMETRY = "telemetry"
    EVENT = "event"
    EVIDENCE = "evidence"
    CMD = "cmd/+"
    CMD_ACK = "cmd/ack"
    VOICE = "voice"  # up: a crew's reply or a `listen` recording, signed (edge_agent/voice/message.py)
    TALK_PARTS = "cmd/talk/+/+"  # down: cmd/talk/<sha256>/<index>, the parts of a talk's audio

    @staticmethod
    def evidence_file(evidence_id: str, filename: str) -> str:
        return f"evidence/{evidence_id}/{filename}"

    @staticmethod
    def evidence_part(evidence_id: str, filename: str, index: int, count: int) -> str:
        """One part of a large evidence file (edge_agent/evidence/publish.py): index from 0."""
        return f"evidence/{evidence_id}/{filename}/{index}/{count}"
