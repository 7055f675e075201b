"""`logging:` — logs go to stderr, for journald."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.config.base import Section


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Least severe level logged.")
    format: Literal["text", "json"] = Field("text", description="'json' for log shippers.")
