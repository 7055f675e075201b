"""`edge-agent run --config PATH`: the daemon (systemd runs this)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge_agent.cli._common import DEFAULT_CONFIG, EXIT_CONFIG, load_checked_or_report
from edge_agent.logsetup import setup_logging

NAME = "run"
HELP = "run the agent"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="config file")


def run(args: argparse.Namespace) -> int:
    loaded = load_checked_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    config = loaded.config
    setup_logging(config.logging)
    from edge_agent.daemon import build_agent

    try:
        parts = build_agent(config, config_warnings=loaded.warnings)  # logged at start, in the status
    except Exception as exc:
        logging.getLogger("edge_agent").critical("cannot start: %s", exc, exc_info=True)
        return 1
    return parts.agent.run_forever()
