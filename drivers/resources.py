"""Where the bundled YAML (example config, meter profiles) lives, in a checkout or an install."""

from __future__ import annotations

import sys
from pathlib import Path


def bundled_config_dir() -> Path:
    """The project's `config/` folder: beside the sources in a checkout, else under share/."""
    here = Path(__file__).resolve().parent.parent / "config"
    if here.is_dir():
        return here
    for prefix in (sys.prefix, sys.base_prefix, "/usr/local", "/usr"):
        candidate = Path(prefix) / "share" / "edge-agent" / "config"
        if candidate.is_dir():
            return candidate
    return here
