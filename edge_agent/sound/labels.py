"""Where the sound models live, and YAMNet's class names (light: the config checks names with it)."""

from __future__ import annotations

import csv
from pathlib import Path

MODELS = Path(__file__).with_name("models")


def load_labels(path: Path = MODELS / "yamnet_class_map.csv") -> list[str]:
    """Display names in score order (row i of index,mid,display_name = score i)."""
    with path.open(newline="", encoding="utf-8") as f:
        return [row["display_name"] for row in csv.DictReader(f)]
