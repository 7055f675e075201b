"""`edge-fw`: field tools. Each sub-command is a module in `firmware_tools/commands/`."""

from __future__ import annotations

from collections.abc import Sequence

from drivers import cli
from firmware_tools import __version__


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("edge-fw", "firmware_tools.commands", "Field tools for edge-agent boxes and meters.",
                    __version__, argv)
