"""`edge-bureau migrate`: bring the PostgreSQL schema up to this version (SQLite needs nothing).

Migrations ship in the package (bureau/store/migrations/NNNN_*.sql) and are applied in
order, each in one transaction; it is safe to run while workers run and from two places at
once. Also makes the monthly telemetry partitions for the months around now.
"""

from __future__ import annotations

import argparse
import sys

from bureau.cli._common import EXIT_CONFIG, add_config, load_or_report

NAME = "migrate"
HELP = "create or upgrade the PostgreSQL schema (store.kind: postgres)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if config.store.kind != "postgres" or not config.store.dsn:
        print("edge-bureau migrate: the store is SQLite, which makes its own schema: nothing to do")
        return 0
    import psycopg

    from bureau.store.postgres import latest_version, migrate

    try:
        applied = migrate(config.store.dsn)
    except psycopg.Error as exc:
        print(f"edge-bureau migrate: {str(exc).strip()}", file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied {name}")
    print(f"schema at version {latest_version()}" + ("" if applied else " (already up to date)"))
    return 0
