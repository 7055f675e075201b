"""Checks across sections, after each section has validated on its own.

Each finding carries the path of the YAML key it is about, so the loader can print the
exact line, the same way as for a type error inside one section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from detectors.registry import unknown_message

if TYPE_CHECKING:
    from edge_agent.config.root import AgentConfig

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Finding:
    loc: Loc
    reason: str


def cross_check(config: AgentConfig) -> list[Finding]:
    """Problems that make the config unusable (exit 2), with the key each one is about."""
    out: list[Finding] = []
    known = config.detectors.names()
    for i, cam in enumerate(config.cameras):
        for j, name in enumerate(cam.detectors):
            if name not in known:
                out.append(Finding(("cameras", i, "detectors", j), unknown_message(name, known)))
    return out
