"""Shared by commands: load the config or print its problems and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.config import AgentConfig, ConfigError, Loaded, load_checked

DEFAULT_CONFIG = Path("/etc/edge-agent/config.yaml")
EXIT_CONFIG = 2


def load_or_report(path: Path) -> AgentConfig | None:
    """The validated config, or None after printing one line per problem to stderr."""
    loaded = load_checked_or_report(path)
    return loaded.config if loaded is not None else None


def load_checked_or_report(path: Path) -> Loaded | None:
    """The validated config with its warnings (not printed), or None after printing one line per
    error to stderr."""
    try:
        return load_checked(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def host_port(text: str) -> tuple[str, int]:
    """argparse type for `HOST:PORT` (a bare `:PORT` means 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    try:
        return (host or "127.0.0.1", int(port))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None
