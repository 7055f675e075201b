"""`edge-agent` command line: each sub-command is a module of this package.

A command module defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int`, so a
new capability adds a command by adding a file (the frame is drivers/cli.py, shared with
`edge-fw`). "Commands" in this project are otherwise the bureau's signed ones
(edge_agent/security/bureau_command.py, run by edge_agent/command_dispatch.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers import cli
from edge_agent import __version__


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("edge-agent", "edge_agent.cli",
                    "On-site agent for construction-site noise, dust and video supervision.", __version__, argv)
