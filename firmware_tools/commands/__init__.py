"""Sub-commands of `edge-fw`, one module each (see firmware_tools/cli.py)."""
