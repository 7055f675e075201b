"""`edge-bureau serve`: ingest, verification and the web console in one process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from bureau.cli._common import EXIT_CONFIG, add_config, load_or_report

NAME = "serve"
HELP = "run the console: ingest from the broker, verify evidence, serve the web UI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    return serve(config)


def serve(config: Any, banner: str = "") -> int:
    import uvicorn

    from bureau.app import Console
    from bureau.web.app import create_app

    try:
        console = Console(config)
    except Exception as exc:  # an unreachable or unmigrated PostgreSQL, an unreadable data dir
        print(f"edge-bureau: cannot open the store: {exc}", file=sys.stderr)
        return 1
    console.start()
    app = create_app(console)
    server = uvicorn.Server(uvicorn.Config(app, host=config.web.host, port=config.web.port, log_level="warning",
                                           timeout_graceful_shutdown=2, access_log=False))
    print(f"edge-bureau: console on http://{config.web.host}:{config.web.port}/ "
          f"(broker {config.mqtt.host}:{config.mqtt.port}, data in {config.store.data_dir})", flush=True)
    if banner:
        print(banner, flush=True)

    def _term(signum: int, frame: Any) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, _term)
    try:
        server.run()
    finally:
        console.stop()
    return 0
