"""The parts of a talk's audio, held in memory until the signed command says which ones count.

Parts arrive unsigned on `cmd/talk/<sha256 of the whole>/<index>` (raw bytes), before or after
their command. Anyone who can publish there could send junk, so nothing is trusted until the
command (verified) names each part's SHA-256: then only a part with that hash is taken, so a
forged or cut part is ignored and the right one can still come. What is held is bounded
(parts per transfer, candidates per index, bytes in all, age): a flood costs a little memory
and the oldest transfers, never the box.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from edge_agent.security.bureau_command import MAX_TALK_BYTES, TALK_MAX_PARTS, TALK_PART_BYTES

log = logging.getLogger(__name__)

_SHA = re.compile(r"[0-9a-f]{64}")
CANDIDATES = 3  # different payloads kept per index: a forger's and the bureau's both fit
HELD_BYTES = 4 * MAX_TALK_BYTES
MAX_AGE_S = 120.0


class PartsError(Exception):
    """The audio cannot be assembled: `reason` is the ack's code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class _Transfer:
    first_seen: float
    parts: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(c) for cands in self.parts.values() for c in cands)


class TalkParts:
    """`on_message` is the uplink's handler for `cmd/talk/#`; `collect` waits for a command's parts."""

    def __init__(self, *, held_bytes: int = HELD_BYTES, max_age_s: float = MAX_AGE_S):
        self.held_bytes = held_bytes
        self.max_age_s = max_age_s
        self._transfers: OrderedDict[str, _Transfer] = OrderedDict()
        self._cond = threading.Condition()
        self.received = 0
        self.ignored: dict[str, int] = {}

    def _ignore(self, why: str) -> None:
        self.ignored[why] = self.ignored.get(why, 0) + 1

    def on_message(self, topic: str, payload: bytes) -> None:
        """Hold one part (the uplink thread). Never raises."""
        bits = topic.rsplit("/", 2)
        if len(bits) != 3 or not _SHA.fullmatch(bits[1]) or not bits[2].isdigit():
            with self._cond:
                self._ignore("bad_topic")
            return
        sha, index = bits[1], int(bits[2])
        with self._cond:
            if index >= TALK_MAX_PARTS or not 0 < len(payload) <= TALK_PART_BYTES:
                self._ignore("bad_part")
                return
            self._prune(time.monotonic())
            transfer = self._transfers.get(sha)
            if transfer is None:
                transfer = self._transfers[sha] = _Transfer(time.monotonic())
            cands = transfer.parts.setdefault(index, [])
            if payload in cands:
                return  # an MQTT redelivery
            cands.append(bytes(payload))
            del cands[:-CANDIDATES]
            self.received += 1
            while sum(t.size for t in self._transfers.values()) > self.held_bytes and len(self._transfers) > 1:
                dropped, _ = self._transfers.popitem(last=False)
                self._ignore("dropped_held_bytes")
                log.warning("talk parts of %s... dropped: more than %d bytes held", dropped[:12], self.held_bytes)
            self._cond.notify_all()

    def _prune(self, now: float) -> None:
        for sha in [s for s, t in self._transfers.items() if now - t.first_seen > self.max_age_s]:
            del self._transfers[sha]
            self._ignore("expired")

    def collect(self, sha256: str, part_hashes: list[str], size: int, timeout: float) -> bytes:
        """The whole audio once every part with its signed hash is in; PartsError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._match(sha256, part_hashes)
                if all(p is not None for p in found):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [i for i, p in enumerate(found) if p is None]
                    raise PartsError("incomplete_audio", f"part(s) {missing[:8]} of {len(part_hashes)} never arrived "
                                     f"with their signed SHA-256 within {timeout:g} s")
                self._cond.wait(min(left, 0.5))
            self._transfers.pop(sha256, None)
        audio = b"".join(p for p in found if p is not None)
        if len(audio) != size or hashlib.sha256(audio).hexdigest() != sha256:
            raise PartsError("audio_mismatch", f"the parts add up to {len(audio)} bytes that do not hash to the "
                             f"signed sha256 ({size} bytes)")
        return audio

    def _match(self, sha256: str, part_hashes: list[str]) -> list[bytes | None]:
        transfer = self._transfers.get(sha256)
        found: list[bytes | None] = []
        for index, want in enumerate(part_hashes):
            cands = transfer.parts.get(index, []) if transfer is not None else []
            found.append(next((c for c in cands if hashlib.sha256(c).hexdigest() == want), None))
        return found

    def health(self) -> dict[str, object]:
        with self._cond:
            return {"held_transfers": len(self._transfers), "held_bytes": sum(t.size for t in self._transfers.values()),
                    "received": self.received, "ignored": dict(self.ignored)}
