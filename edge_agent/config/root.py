"""The whole config file. Later capabilities add one section (one module) each."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edge_agent.config.actions import ActionRules, Relays, SpeakerConfig
from edge_agent.config.base import Section
from edge_agent.config.cameras import Cameras
from edge_agent.config.detectors import DetectorsConfig
from edge_agent.config.hj212 import Hj212Config
from edge_agent.config.logging import LoggingConfig
from edge_agent.config.meters import Meters
from edge_agent.config.microphone import MicrophoneConfig
from edge_agent.config.mqtt import MqttConfig
from edge_agent.config.rules import RulesConfig
from edge_agent.config.schedule import ScheduleConfig
from edge_agent.config.security import BureauConfig, EvidenceConfig
from edge_agent.config.site import DeviceConfig, SiteConfig
from edge_agent.config.storage import StorageConfig
from edge_agent.config.telemetry import TelemetryConfig
from edge_agent.config.voice import VoiceConfig


class AgentConfig(Section):
    """Root of /etc/edge-agent/config.yaml."""

    site: SiteConfig = Field(..., description="The construction site.")
    device: DeviceConfig = Field(..., description="This box.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="The bureau's MQTT broker.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Local storage.")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="Periodic messages.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log output.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Night hours, quiet hours, permits.")
    rules: RulesConfig = Field(default_factory=RulesConfig, description="When figures become violations.")
    meters: Meters = Field(
        default_factory=list,
        description="RS-485 Modbus meters (noise, dust, weather); meters on one port share a bus.",
    )
    microphone: MicrophoneConfig = Field(
        default_factory=MicrophoneConfig, description="A measuring microphone: sound level, noise source, audio."
    )
    cameras: Cameras = Field(
        default_factory=list, description="RTSP cameras: analysis rate, clips, watermark, zones, detectors, tamper."
    )
    hj212: Hj212Config | None = Field(
        None, description="HJ 212-2017 uplink to a bureau platform over TCP; omit if the bureau takes MQTT only."
    )
    bureau: BureauConfig = Field(
        default_factory=BureauConfig, description="Signed bureau commands: trusted keys, lifetimes, which commands."
    )
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Signed, hash-chained evidence.")
    speaker: SpeakerConfig = Field(default_factory=SpeakerConfig, description="The loudspeaker and its clips.")
    voice: VoiceConfig = Field(
        default_factory=VoiceConfig, description="Two-way talk: the bureau's recorded voice, the crew's reply, listen."
    )
    relays: Relays = Field(default_factory=list, description="Relay outputs (spray cannon, strobe) on GPIO pins.")
    actions: ActionRules = Field(
        default_factory=dict, description="Per violation kind: clip, relays, speaker priority (merged into defaults)."
    )
    detectors: DetectorsConfig = Field(
        default_factory=DetectorsConfig, description="Video detectors: model overrides, threads, thresholds."
    )

    def place(self) -> dict[str, Any]:
        """Where the box and its cameras are, as the retained status and every evidence manifest carry it
        (一工地一码 / 一张图: the site id is the code, this puts it on the bureau's map)."""
        return {
            "location": {"name": self.site.name, **self.site.location.as_json()},
            "cameras": [{"id": cam.id, "pose": cam.pose} for cam in self.cameras if cam.enabled],
        }

    def limits(self) -> dict[str, Any]:
        """The limits this box judges by, as its status carries them: the bureau draws its charts'
        limit lines from what the box really applies, not from a copy of its own."""
        r = self.rules
        night = [{"start": w.start, "end": w.end} for w in self.schedule.night]
        return {
            "noise": {"quantity": r.noise.quantity, "window_s": r.noise.window_s,
                      "day_db": r.noise.day_limit_db + r.noise.indoor_offset_db,
                      "night_db": r.noise.night_limit_db + r.noise.indoor_offset_db,
                      "night_lmax_excess_db": r.night_lmax.excess_db, "night": night},
            "dust": {"quantity": r.dust.quantity, "window_s": r.dust.window_s, "limit": r.dust.limit,
                     "unit": r.dust.unit, "enabled": r.dust.enabled},
        }
