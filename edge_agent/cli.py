"""`edge-agent` command line. Each sub-command is a module in `edge_agent/commands/`.

A command module defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int`, so a
new capability adds a command by adding a file.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers import cli
from edge_agent import __version__


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("edge-agent", "edge_agent.commands",
                    "On-site agent for construction-site noise, dust and video supervision.", __version__, argv)
