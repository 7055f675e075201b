"""`storage:` — where the outbox and evidence live, and how long things are kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge_agent.config.base import Section


class RetentionConfig(Section):
    """Shenzhen's 2018 dust notice: data >= 180 days and video >= 30 days kept on site."""

    readings_days: int = Field(
        180, ge=1, description="Keep readings and figures this long (Shenzhen 2018 notice: >= 180 days)."
    )
    video_days: int = Field(
        30, ge=1, description="Keep video clips this long (Shenzhen 2018 notice: >= 30 days)."
    )
    evidence_days: int = Field(
        180, ge=1, description="Keep evidence bundles (snapshots, readings) this long."
    )


class StorageConfig(Section):
    data_dir: Path = Field(
        Path("/var/lib/edge-agent"), description="Outbox, evidence and keys live here."
    )
    outbox_max_mb: int = Field(
        512,
        ge=1,
        description=(
            "Cap on the outbox. Over it, the oldest telemetry is dropped first; evidence and "
            "events only when no telemetry is left, and every drop is reported in status."
        ),
    )
    disk_min_free_mb: int = Field(
        200, ge=0, description="Below this much free disk, old retained files are pruned first."
    )
    fsync: bool = Field(
        True,
        description=(
            "Flush every outbox write to the storage device (survives power loss). "
            "Turn off only on storage that cannot take the writes."
        ),
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="How long to keep.")
