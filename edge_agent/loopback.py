"""Free TCP ports on 127.0.0.1, for the servers the demo (and the tests and benches) start themselves."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (another process may take it before we do: rare, retried)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
