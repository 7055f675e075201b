"""`edge-agent run --config PATH`: the daemon (systemd runs this).

A remote config change (edge_agent/fleet/remote_config.py) restarts the process in place: the
agent stops, and this command execs itself with the same arguments. Before the config is
loaded, a change still being confirmed is counted, and one that cannot load or build is
rolled back here, so a bad config never keeps the box down.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from edge_agent.cli._common import DEFAULT_CONFIG, EXIT_CONFIG, load_checked_or_report
from edge_agent.logsetup import setup_logging

NAME = "run"
HELP = "run the agent"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="config file")


def run(args: argparse.Namespace) -> int:
    from edge_agent.fleet.remote_config import boot, start_failed

    boot(args.config)
    loaded = load_checked_or_report(args.config)
    if loaded is None:
        if start_failed(args.config, "the new config does not load (check-config)"):
            restart_process("rolling back a config that does not load")
        return EXIT_CONFIG
    config = loaded.config
    setup_logging(config.logging)
    from edge_agent.fleet import logring

    try:
        logring.install(config.storage.data_dir)  # recent lines for the `logs` command, across restarts
    except OSError as exc:
        logging.getLogger("edge_agent").warning("no log ring in the data dir: %s", exc)
    from edge_agent.daemon import build_agent

    try:
        parts = build_agent(config, config_warnings=loaded.warnings,  # logged at start, in the status
                            config_path=args.config)
    except Exception as exc:
        logging.getLogger("edge_agent").critical("cannot start: %s", exc, exc_info=True)
        if start_failed(args.config, f"cannot start: {type(exc).__name__}: {exc}"):
            restart_process("rolling back a config that cannot start")
        return 1
    code = parts.agent.run_forever()
    if parts.agent.restart_reason:
        restart_process(parts.agent.restart_reason)
    return code


def restart_process(reason: str) -> None:
    """Replace this process by a fresh `edge-agent` with the same arguments (the PID stays: systemd
    keeps supervising it). Files and sockets are closed on exec (Python opens them close-on-exec)."""
    logging.getLogger("edge_agent").warning("restarting the process: %s", reason)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "edge_agent", *sys.argv[1:]])
