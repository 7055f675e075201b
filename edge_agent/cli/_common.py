"""Shared by commands: load the config or print its problems and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

from edge_agent.config import AgentConfig, ConfigError, load_config

DEFAULT_CONFIG = Path("/etc/edge-agent/config.yaml")
EXIT_CONFIG = 2


def load_or_report(path: Path) -> AgentConfig | None:
    """The validated config, or None after printing one line per problem to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
