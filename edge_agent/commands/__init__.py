"""Sub-commands of `edge-agent`, one module each (see edge_agent/cli.py)."""
