"""Content too large for one command travels in parts: each part a signed command of its own.

Every part carries the whole content's `sha256` and `size`, its index `part` (0-based) and the
count `parts`, and `data` (base64 of its bytes). Parts are kept under the data dir until all
are in; the assembled bytes must hash to `sha256`, which the bureau signed in every part, so a
part cannot be swapped. Unfinished transfers are dropped after `max_age_s`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SHA = re.compile(r"[0-9a-f]{64}")
TRANSFER_KEYS = ("sha256", "size", "part", "parts", "data")


class TransferError(Exception):
    """A part that cannot belong to a valid transfer: `reason` is the ack's code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Progress:
    """Where a transfer stands after a part: `content` is set once it is complete and verified."""

    sha256: str
    received: int
    parts: int
    content: bytes | None = None


def split(content: bytes, part_bytes: int) -> list[dict[str, Any]]:
    """The bureau side: the transfer fields of each part (to merge into a command's args)."""
    if part_bytes < 1:
        raise ValueError("part_bytes must be positive")
    digest = hashlib.sha256(content).hexdigest()
    chunks = [content[i:i + part_bytes] for i in range(0, len(content), part_bytes)] or [b""]
    return [{"sha256": digest, "size": len(content), "part": i, "parts": len(chunks),
             "data": base64.b64encode(chunk).decode("ascii")} for i, chunk in enumerate(chunks)]


def transfer_problem(args: Mapping[str, Any], max_bytes: int) -> str | None:
    """What is wrong with a part's transfer fields, or None."""
    sha, size, part, parts, data = (args.get(k) for k in TRANSFER_KEYS)
    if not (isinstance(sha, str) and _SHA.fullmatch(sha)):
        return "'sha256' must be 64 lower-case hex digits"
    if type(size) is not int or not 0 <= size <= max_bytes:
        return f"'size' must be an integer 0..{max_bytes}"
    if type(parts) is not int or not 1 <= parts <= 100_000:
        return "'parts' must be an integer 1..100000"
    if type(part) is not int or not 0 <= part < parts:
        return "'part' must be an integer 0..parts-1"
    if not isinstance(data, str):
        return "'data' must be base64 text"
    return None


class Transfers:
    """Parts in `root/<sha256>/`, assembled and checked when the last one arrives."""

    def __init__(self, root: Path, max_bytes: int, max_age_s: float = 3600.0):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    def add(self, args: Mapping[str, Any]) -> Progress:
        problem = transfer_problem(args, self.max_bytes)
        if problem:
            raise TransferError("invalid_args", problem)
        sha, size, part, parts = args["sha256"], args["size"], args["part"], args["parts"]
        try:
            chunk = base64.b64decode(args["data"], validate=True)
        except (binascii.Error, ValueError):
            raise TransferError("invalid_args", "'data' is not valid base64") from None
        with self._lock:
            self._prune()
            folder = self.root / sha
            folder.mkdir(parents=True, exist_ok=True)
            meta_path = folder / "meta.json"
            meta = {"size": size, "parts": parts}
            if meta_path.exists():
                if json.loads(meta_path.read_text()) != meta:
                    raise TransferError("invalid_args", "size or parts differ from the transfer's earlier parts")
            else:
                meta_path.write_text(json.dumps(meta))
            (folder / f"{part:06d}.part").write_bytes(chunk)
            have = sorted(folder.glob("*.part"))
            if len(have) < parts:
                return Progress(sha, len(have), parts)
            content = b"".join(p.read_bytes() for p in have)
            shutil.rmtree(folder, ignore_errors=True)
        if len(content) != size or hashlib.sha256(content).hexdigest() != sha:
            raise TransferError("hash_mismatch", f"the {parts} part(s) add up to {len(content)} bytes with sha256 "
                                f"{hashlib.sha256(content).hexdigest()[:16]}..., the command says {size} bytes, "
                                f"{sha[:16]}...")
        return Progress(sha, parts, parts, content)

    def _prune(self) -> None:
        if not self.root.is_dir():
            return
        cutoff = time.time() - self.max_age_s
        for folder in self.root.iterdir():
            try:
                if folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue
