"""`edge-fw`: field tools; each sub-command is a module of this package (frame: drivers/cli.py)."""

from __future__ import annotations

from collections.abc import Sequence

from drivers import cli
from firmware_tools import __version__


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("edge-fw", "firmware_tools.cli", "Field tools for edge-agent boxes and meters.", __version__, argv)
