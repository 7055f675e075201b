"""The bureau side of `config` and `model`: the arguments of each part, ready to sign.

`edge-agent sign-command config --file new.yaml --expect-file current.yaml --key K ...` prints one
signed command per part (one line each, in order); so does `model --file head.npz --card card.yaml`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from edge_agent.fleet.transfer import split

DEFAULT_PART_BYTES = 4096  # 5.5 kB of base64: each part fits the box's default 8 kB command limit


def expected_hash(expect: str | None, expect_file: Path | None) -> str | None:
    if expect_file is not None:
        return hashlib.sha256(Path(expect_file).read_bytes()).hexdigest()
    return expect


def part_args(name: str, base: dict[str, Any], *, file: Path | None, card: Path | None,
              expect_sha256: str | None, part_bytes: int = DEFAULT_PART_BYTES) -> list[dict[str, Any]]:
    """The args of each command to send, in order (one element when nothing is split)."""
    if name == "config":
        if expect_sha256 is None:
            raise ValueError("config: give --expect SHA256 or --expect-file (the config the box runs now)")
        base = {**base, "expect_sha256": expect_sha256}
        if file is None:
            if "sections" not in base:
                raise ValueError("config: give --file NEW.yaml or sections (--args-json '{\"sections\": {...}}')")
            return [base]
        return [{**base, **part} for part in split(Path(file).read_bytes(), part_bytes)]
    if name == "model":
        if file is None or card is None:
            raise ValueError("model: give --file HEAD.npz and --card CARD.yaml")
        card_bytes = Path(card).read_bytes()
        card_data = yaml.safe_load(card_bytes)
        model = base.get("model") or (card_data.get("name") if isinstance(card_data, dict) else None)
        base = {**base, "model": model, "card_bytes": len(card_bytes)}
        return [{**base, **part} for part in split(card_bytes + Path(file).read_bytes(), part_bytes)]
    if file is not None or card is not None:
        raise ValueError(f"{name}: --file and --card go with config and model only")
    return [base]
