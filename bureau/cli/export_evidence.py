"""`edge-bureau export-evidence SITE/DEVICE BUNDLE -o FILE.zip`: the penalty-file zip, from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bureau.cli._common import EXIT_CONFIG, add_config, load_or_report

NAME = "export-evidence"
HELP = "write one evidence bundle as a zip with a printable summary (verify-evidence accepts it unzipped)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="SITE/DEVICE")
    parser.add_argument("bundle")
    parser.add_argument("-o", "--output", type=Path, required=True)
    add_config(parser)


def run(args: argparse.Namespace) -> int:
    from bureau.export import export_zip
    from bureau.store import open_store

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    site, _, device = args.target.partition("/")
    store, files = open_store(config)
    data = export_zip(config, store, files, site, device, args.bundle)
    if data is None:
        print(f"edge-bureau export-evidence: no bundle {args.bundle} of {args.target}", file=sys.stderr)
        return 1
    args.output.write_bytes(data)
    print(f"{args.output}: {len(data)} bytes")
    return 0
