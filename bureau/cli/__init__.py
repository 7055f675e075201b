"""`edge-bureau` command line: one module per sub-command (the frame is drivers/cli.py, shared with
`edge-agent` and `edge-fw`)."""

from __future__ import annotations

from collections.abc import Sequence

from bureau import __version__
from drivers import cli


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main("edge-bureau", "bureau.cli",
                    "The bureau's console for edge-agent boxes: ingest, evidence, web UI, signed commands.",
                    __version__, argv)
