"""Shared by commands: the config file, or its problems on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bureau.config import BureauConfig, ConfigError, load_config

DEFAULT_CONFIG = Path("/etc/edge-bureau/config.yaml")
EXIT_CONFIG = 2


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")


def load_or_report(path: Path) -> BureauConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
