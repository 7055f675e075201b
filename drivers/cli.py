"""The command-line frame both programs share: `edge-agent` and `edge-fw`.

Each sub-command is a module in a package (NAME, HELP, optional DESCRIPTION and
`add_arguments(parser)`, and `run(args) -> int`), so a new capability adds a command by
adding a file. This lives in drivers/ because it is the one package both programs may import
(firmware_tools imports drivers only); it knows nothing of either program.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType


def discover(package: str) -> list[ModuleType]:
    """The sub-command modules of `package`, sorted by command name."""
    pkg = importlib.import_module(package)
    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{package}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def build_parser(prog: str, package: str, description: str, version: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in discover(package):
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse and run; Ctrl-C is exit 130, and output into a closed pipe (`| head`) is not an error."""
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point stdout at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def main(prog: str, package: str, description: str, version: str, argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(prog, package, description, version), argv)
