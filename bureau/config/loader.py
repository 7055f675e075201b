"""Load the bureau's YAML with the agent's loader: the same bounds and `FILE:LINE:COL: path: reason` lines."""

from __future__ import annotations

from pathlib import Path

from bureau.config.model import BureauConfig
from edge_agent.config.loader import load_model


def load_config(path: str | Path) -> BureauConfig:
    """Parse and validate; raises ConfigError listing every problem with its line."""
    return load_model(path, BureauConfig)[0]
