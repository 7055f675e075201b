"""`edge-bureau check-config PATH`: validate the bureau's config (same line-exact errors as the agent's)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bureau.cli._common import EXIT_CONFIG, load_or_report

NAME = "check-config"
HELP = "validate a config file: a summary (exit 0) or FILE:LINE:COL: path: reason lines (exit 2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.path)
    if config is None:
        return EXIT_CONFIG
    m = config.mqtt
    print(f"OK  {args.path}")
    print(f"  broker   {m.host}:{m.port}{' TLS' if m.tls else ''}, MQTT {m.protocol}, topics {m.topic_prefix}/#"
          + (f", user {m.username}" if m.username else ""))
    st = config.store
    if st.kind == "postgres":
        from bureau.store.postgres import safe_dsn

        evidence = st.evidence_dir or st.data_dir / "evidence"
        print(f"  store    postgres {safe_dsn(st.dsn or '')}, evidence in {evidence}")
    else:
        print(f"  store    sqlite in {st.data_dir}")
    print(f"  web      http://{config.web.host}:{config.web.port}/")
    print(f"  key      {config.key_file}")
    print(f"  limits   noise {config.limits.noise_day_db:g}/{config.limits.noise_night_db:g} dB(A), "
          f"{len(config.sites)} site(s) with their own settings")
    return 0
