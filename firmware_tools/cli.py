"""`edge-fw`: field tools. Each sub-command is a module in `firmware_tools/commands/`.

A command module defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fw", description="Field tools for edge-agent boxes and meters.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    pkg = importlib.import_module("firmware_tools.commands")
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"firmware_tools.commands.{info.name}")
        if not (hasattr(mod, "NAME") and hasattr(mod, "run")):
            continue
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
