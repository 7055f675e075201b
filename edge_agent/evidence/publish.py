"""Sending a bundle to the bureau: each file on `evidence/<id>/<file>`, then the manifest.

A file larger than `PART_BYTES` (a clip, a long recording) goes as parts on
`evidence/<id>/<file>/<index>/<count>`, read from disk one part at a time: a 9-MB clip then
never sits whole in the box's memory (read, bound by SQLite, fetched again, copied into the
MQTT packet: four copies before), a flaky 4G link resends a part rather than the clip, and
brokers that cap a message at 1 MB (EMQX's default) still take it. The bureau joins the
parts in index order and checks the whole against the manifest's SHA-256, as for a file
sent in one piece.

The manifest goes last and as the exact bytes of `manifest.json`, so the bureau can check
the signature on what it received. A bundle is complete at the bureau when the manifest
has arrived and every file it lists has arrived with the listed SHA-256: that rule holds
whatever order a reconnect delivers messages in; in the normal case the files are already
there when the manifest comes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.evidence.bundle import BUNDLE_DIR, FILE_NAME, MANIFEST, Evidence
from edge_agent.types import Publish
from edge_agent.uplink.topics import Topics

KIND = "evidence"
PART_BYTES = 256 * 1024  # well under a 1-MB broker cap; 16 parts fit the uplink's 4 MB in flight
MAX_PARTS = 4096  # 1 GB at PART_BYTES: far above any clip, a bound for the receiving side


def part_count(size: int, part_bytes: int = PART_BYTES) -> int:
    """How many messages a file of `size` bytes goes as (1: whole, on the file's own topic)."""
    return max(1, -(-size // part_bytes))


def file_messages(evidence_id: str, path: Path, part_bytes: int = PART_BYTES) -> Iterator[tuple[str, bytes]]:
    """(topic leaf, bytes) for one file: the whole file, or its parts read one at a time."""
    size = path.stat().st_size
    count = part_count(size, part_bytes)
    if count == 1:
        yield Topics.evidence_file(evidence_id, path.name), path.read_bytes()
        return
    with open(path, "rb") as fh:
        for index in range(count):
            data = fh.read(part_bytes)
            yield Topics.evidence_part(evidence_id, path.name, index, count), data


def publish_bundle(evidence: Evidence, publish: Publish, part_bytes: int = PART_BYTES) -> int:
    """Queue every file (in parts where large), then the manifest; returns the number of messages."""
    sent = 0
    for name in evidence.file_names:
        for leaf, data in file_messages(evidence.id, evidence.path / name, part_bytes):
            publish(leaf, data, kind=KIND)
            sent += 1
    publish(Topics.EVIDENCE, (evidence.path / MANIFEST).read_bytes(), kind=KIND)
    return sent + 1


@dataclass(frozen=True)
class FilePiece:
    """What an evidence file topic says: which bundle and file, and which part of how many."""

    bundle: str
    name: str
    index: int = 0
    count: int = 1


def parse_file_leaf(leaf: str) -> FilePiece | None:
    """`evidence/<id>/<file>` or `evidence/<id>/<file>/<index>/<count>`; None for anything else.

    Strict: the bundle id and file name match the bundle's own patterns, the numbers are plain
    decimals with 0 <= index < count <= MAX_PARTS, and a whole file is never sent as "1 part".
    """
    bits = leaf.split("/")
    if len(bits) not in (3, 5) or bits[0] != "evidence":
        return None
    bundle, name = bits[1], bits[2]
    if not BUNDLE_DIR.fullmatch(bundle) or not FILE_NAME.fullmatch(name) or name == MANIFEST:
        return None
    if len(bits) == 3:
        return FilePiece(bundle, name)
    index, count = bits[3], bits[4]
    if not (index.isdecimal() and count.isdecimal() and index.isascii() and count.isascii()) \
            or len(index) > 5 or len(count) > 5:
        return None
    i, n = int(index), int(count)
    if not (2 <= n <= MAX_PARTS and 0 <= i < n):
        return None
    return FilePiece(bundle, name, i, n)


@dataclass
class Reassembly:
    """Joins the evidence files of received messages (duplicates and any order allowed).

    For tools that hold what a broker delivered in memory (tests, the soak bench); the bureau
    keeps parts on disk instead (bureau/store/files.py).
    """

    _parts: dict[tuple[str, str, int], dict[int, bytes]] = field(default_factory=dict)

    def add(self, leaf: str, payload: bytes) -> FilePiece | None:
        piece = parse_file_leaf(leaf)
        if piece is not None:
            self._parts.setdefault((piece.bundle, piece.name, piece.count), {}).setdefault(piece.index, payload)
        return piece

    def files(self, bundle: str | None = None) -> dict[tuple[str, str], bytes]:
        """(bundle, name) → bytes for every file whose parts have all arrived."""
        out: dict[tuple[str, str], bytes] = {}
        for (b, name, count), parts in self._parts.items():
            if (bundle is None or b == bundle) and len(parts) == count:
                out[(b, name)] = b"".join(parts[i] for i in range(count))
        return out

    def waiting(self) -> set[tuple[str, str]]:
        """(bundle, name) of files some of whose parts are still missing."""
        return {(b, name) for (b, name, count), parts in self._parts.items() if len(parts) < count}
