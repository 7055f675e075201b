"""Checking bundles: every file's hash, the manifest's form and signature, the chain's links.

With no key given, a bundle is checked against the public key it carries itself: that
proves it was not altered after signing, not *who* signed it. Pass the device's public key
(from `edge-fw keys show-public` on the box, or the bureau's register) to prove origin.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.evidence.bundle import BUNDLE_DIR, FILE_NAME, FORMAT, GENESIS_HASH, HEAD_FILE, MANIFEST
from edge_agent.security.canonical import CanonicalError, canonical_bytes, loads_strict
from edge_agent.security.keys import KeyFileError, key_id, parse_public_key, verify

_HEX64 = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class BundleReport:
    path: Path
    id: str | None
    seq: int | None
    hash: str | None  # SHA-256 of manifest.json
    prev_hash: str | None
    key_id: str | None
    files: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ChainReport:
    bundles: tuple[BundleReport, ...]
    problems: tuple[str, ...]  # links, gaps and the head; bundle problems are in `bundles`
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems and all(b.ok for b in self.bundles)


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


def verify_bundle(path: Path, public_key: Ed25519PublicKey | None = None) -> BundleReport:
    """Check one bundle directory; never raises for what is inside it."""
    problems: list[str] = []

    def report(manifest: dict[str, Any] | None = None, digest: str | None = None) -> BundleReport:
        m = manifest or {}
        return BundleReport(path, _opt_str(m.get("id")), m.get("seq") if type(m.get("seq")) is int else None,
                            digest, _opt_str(m.get("prev_hash")), _opt_str(m.get("key_id")),
                            len(m.get("files") or []) if isinstance(m.get("files"), list) else 0, tuple(problems))

    try:
        data = (path / MANIFEST).read_bytes()
    except OSError as exc:
        problems.append(f"{MANIFEST}: cannot read: {exc.strerror or exc}")
        return report()
    digest = hashlib.sha256(data).hexdigest()
    try:
        manifest = loads_strict(data)
    except (ValueError, RecursionError) as exc:
        problems.append(f"{MANIFEST}: not valid JSON: {str(exc)[:100]}")
        return report(None, digest)
    if not isinstance(manifest, dict):
        problems.append(f"{MANIFEST}: not a JSON object")
        return report(None, digest)
    try:
        if canonical_bytes(manifest) != data:
            problems.append(f"{MANIFEST}: not in canonical form (the file was edited)")
        signed = canonical_bytes({k: v for k, v in manifest.items() if k != "signature"})
    except CanonicalError as exc:
        problems.append(f"{MANIFEST}: {exc}")
        return report(manifest, digest)
    if manifest.get("format") != FORMAT:
        problems.append(f"{MANIFEST}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
        return report(manifest, digest)
    for key, kind in (("id", str), ("seq", int), ("site", str), ("device", str), ("created", str),
                      ("files", list), ("prev_hash", str), ("key_id", str), ("public_key", str),
                      ("signature", str)):
        if type(manifest.get(key)) is not kind:
            problems.append(f"{MANIFEST}: '{key}' missing or not a {kind.__name__}")
    if problems:
        return report(manifest, digest)
    if manifest["id"] != path.name:
        problems.append(f"directory is {path.name} but the manifest says {manifest['id']}")
    if not _is_hex64(manifest["prev_hash"]):
        problems.append(f"{MANIFEST}: prev_hash is not a SHA-256 hex digest")
    _check_signature(manifest, signed, public_key, problems)
    _check_files(path, manifest["files"], problems)
    return report(manifest, digest)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _check_signature(manifest: dict[str, Any], signed: bytes, public_key: Ed25519PublicKey | None,
                     problems: list[str]) -> None:
    try:
        carried = parse_public_key(manifest["public_key"])
    except KeyFileError as exc:
        problems.append(f"{MANIFEST}: public_key: {exc}")
        return
    if key_id(carried) != manifest["key_id"]:
        problems.append(f"{MANIFEST}: key_id {manifest['key_id']} does not belong to its public_key")
    key = public_key or carried
    if public_key is not None and key_id(public_key) != key_id(carried):
        problems.append(f"signed by key {key_id(carried)}, expected key {key_id(public_key)}")
    if not verify(key, manifest["signature"], signed):
        problems.append(f"signature does not verify with key {key_id(key)}")


def _check_files(path: Path, entries: list[Any], problems: list[str]) -> None:
    listed: set[str] = set()
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and _is_hex64(entry.get("sha256")) and type(entry.get("size")) is int):
            problems.append(f"{MANIFEST}: malformed file entry {json.dumps(entry)[:80]}")
            continue
        name = entry["name"]
        if not FILE_NAME.fullmatch(name) or name == MANIFEST or name in listed:
            problems.append(f"{MANIFEST}: bad or repeated file name {name!r}")
            continue
        listed.add(name)
        file = path / name
        if not file.is_file():
            problems.append(f"{name}: missing")
            continue
        data = file.read_bytes()
        if len(data) != entry["size"]:
            problems.append(f"{name}: size {len(data)}, manifest says {entry['size']}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{name}: SHA-256 does not match the manifest")
    for extra in sorted(p.name for p in path.iterdir() if p.name != MANIFEST and p.name not in listed):
        problems.append(f"{extra}: not listed in the manifest")


def bundle_dirs(root: Path) -> list[Path]:
    """Every bundle directory under an evidence root (skips temporaries and the head file)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / MANIFEST).exists() or BUNDLE_DIR.fullmatch(p.name)))


def verify_chain(root: Path, public_key: Ed25519PublicKey | None = None) -> ChainReport:
    """Each bundle, then the links: seq without gaps, prev_hash = hash of the bundle before, one key."""
    reports = [verify_bundle(p, public_key) for p in bundle_dirs(root)]
    problems: list[str] = []
    notes: list[str] = []
    ordered = sorted((r for r in reports if r.seq is not None), key=lambda r: r.seq or 0)
    if not ordered:
        problems.append(f"{root}: no evidence bundles found")
    prev: BundleReport | None = None
    for r in ordered:
        if prev is None:
            if r.seq == 1 and r.prev_hash != GENESIS_HASH:
                problems.append(f"{r.id}: first bundle's prev_hash is not the genesis value")
            elif r.seq != 1:
                notes.append(f"chain starts at seq {r.seq}; earlier bundles were pruned or are missing")
        else:
            if r.seq == prev.seq:
                problems.append(f"{r.id}: seq {r.seq} appears twice (also {prev.id})")
            elif r.seq != (prev.seq or 0) + 1:
                problems.append(f"{r.id}: gap, seq {(prev.seq or 0) + 1}..{(r.seq or 0) - 1} missing")
            elif r.prev_hash != prev.hash:
                problems.append(f"{r.id}: prev_hash does not match the hash of {prev.id} (link broken)")
            if r.key_id != prev.key_id:
                problems.append(f"{r.id}: signed by key {r.key_id}, the bundle before by {prev.key_id}")
        prev = r
    _check_head(root, ordered[-1] if ordered else None, problems)
    return ChainReport(tuple(sorted(reports, key=lambda r: (r.seq or 0, str(r.path)))), tuple(problems),
                       tuple(notes))


def _check_head(root: Path, newest: BundleReport | None, problems: list[str]) -> None:
    """The box's own record of its newest bundle: catches bundles deleted from the end."""
    try:
        head = json.loads((root / HEAD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        problems.append(f"{HEAD_FILE}: unreadable: {exc}")
        return
    if not isinstance(head, dict) or newest is None:
        return
    if head.get("seq") != newest.seq or head.get("hash") != newest.hash:
        problems.append(f"{HEAD_FILE}: the box's newest bundle is seq {head.get('seq')} ({head.get('id')}), "
                        f"the newest here is seq {newest.seq} ({newest.id}) or differs")
