"""`telemetry:` — the minute message to the bureau."""

from __future__ import annotations

from pydantic import Field

from edge_agent.config.base import Section


class TelemetryConfig(Section):
    interval_s: int = Field(60, ge=1, le=3600, description="Seconds between telemetry messages.")
    status_interval_s: int = Field(
        300, ge=10, description="Seconds between refreshes of the retained status message."
    )
