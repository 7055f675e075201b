"""Building and storing evidence bundles, each linked to the one before it.

A bundle is a directory `ROOT/<id>/` holding its files and `manifest.json`:

    {"format": "edge-agent-evidence/1", "id": "00000042-20261123T040000Z-a1b2", "seq": 42,
     "site": "...", "device": "...", "created": "2026-11-23T04:00:00.000+00:00",
     "clock_synchronized": true, "violation": {...} | null, "subject": {...},
     "location": {"name": "...", "latitude": 22.53, "longitude": 113.93, "datum": "WGS-84",
                  "address": "..."},
     "cameras": [{"id": "cam-exit", "pose": "east hoarding, facing the exit, 12 m up"}],
     "files": [{"name": "readings.json", "sha256": "<hex>", "size": 1234,
                "media_type": "application/json"}],
     "prev_hash": "<hex: hash of bundle 41; 64 zeros for the first>",
     "key_id": "<16 hex>", "public_key": "<base64 raw>", "signature": "<base64>"}

`manifest.json` holds exactly the canonical form (RFC 8785, `security/canonical.py`) of
that object; the signature is Ed25519 by the device key over the canonical form without
`signature`; a bundle's hash is SHA-256 of the whole manifest file. `location` and
`cameras` say where the site and its cameras are, for the bureau's map (a store made
without a config leaves them out). `ROOT/chain-head.json`
remembers the newest bundle so the chain continues across restarts (and a deleted newest
bundle is noticed). Bundles are written to a temporary directory and renamed into place,
so a crash leaves either a whole bundle or none.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from drivers.types import Reading
from edge_agent.clock import clock_synchronized, utc_now
from edge_agent.config import AgentConfig
from edge_agent.files import sha256_file
from edge_agent.security.canonical import canonical_bytes, loads_strict
from edge_agent.security.keys import Signer, device_signer
from edge_agent.timefmt import iso
from edge_agent.types import Violation

log = logging.getLogger(__name__)

FORMAT = "edge-agent-evidence/1"
MANIFEST = "manifest.json"
HEAD_FILE = "chain-head.json"
GENESIS_HASH = "0" * 64
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
BUNDLE_DIR = re.compile(r"(\d{8})-\d{8}T\d{6}Z-[0-9a-f]{4}")
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4",
               ".json": "application/json", ".csv": "text/csv", ".txt": "text/plain", ".ogg": "audio/ogg"}


@dataclass(frozen=True)
class EvidenceFile:
    """One file to put in a bundle; `media_type` defaults from the name's extension.

    Either `data`, or `move_from`: a file (a video clip, megabytes) that the store moves into
    the bundle and hashes as it goes, so the bundle never holds it in memory.
    """

    name: str
    data: bytes = b""
    media_type: str = ""
    move_from: Path | None = None


@dataclass(frozen=True)
class Evidence:
    """A stored, signed bundle."""

    id: str
    seq: int
    path: Path
    hash: str  # SHA-256 of manifest.json: the next bundle's prev_hash
    manifest: Mapping[str, Any]

    @property
    def file_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.manifest["files"])


@dataclass(frozen=True)
class ChainHead:
    seq: int
    id: str | None
    hash: str


GENESIS = ChainHead(0, None, GENESIS_HASH)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def readings_file(readings: Iterable[Reading], *, name: str = "readings.json",
                  about: Mapping[str, Any] | None = None) -> EvidenceFile:
    """The window of samples behind a violation, as a JSON file (times UTC, ISO 8601)."""
    rows = [{"sensor": r.sensor_id, "quantity": r.quantity, "value": _finite(r.value), "unit": r.unit,
             "time": iso(r.time), "quality": getattr(r.quality, "value", str(r.quality))} for r in readings]
    body = {**(about or {}), "readings": rows}
    return EvidenceFile(name, json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"), "application/json")


def _finite(value: Any) -> Any:
    """NaN and infinities have no JSON form; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def violation_json(violation: Violation) -> dict[str, Any]:
    return _finite({**violation.to_json(), "time": iso(violation.time)})


class EvidenceStore:
    """Creates bundles one at a time (a lock, and a file lock against a second process)."""

    name = "evidence"

    def __init__(self, root: Path, signer: Signer, site: str, device: str, *,
                 now: Callable[[], datetime] = utc_now,
                 clock_sync: Callable[[], bool | None] = clock_synchronized,
                 clock_steps: Callable[[], list[dict[str, Any]]] | None = None,
                 place: Mapping[str, Any] | None = None):
        self.root = root
        self.place = dict(place or {})  # AgentConfig.place(): location and cameras, in every manifest
        self.clock_steps = clock_steps
        self.signer = signer
        self.site = site
        self.device = device
        self.now = now
        self.clock_sync = clock_sync
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self.created = 0
        self.last_error = ""
        with self._locked():
            self._remove_partial()
            self._head = self._recover_head()

    # --- creating ----------------------------------------------------------------------------

    def create(self, files: Sequence[EvidenceFile], *, violation: Violation | None = None,
               subject: Mapping[str, Any] | None = None) -> Evidence:
        """Write, sign and chain a bundle; returns once it is on disk."""
        names = [f.name for f in files]
        for name in names:
            if not FILE_NAME.fullmatch(name) or name in (MANIFEST, HEAD_FILE):
                raise ValueError(f"bad evidence file name {name!r}")
        if len(set(names)) != len(names):
            raise ValueError("evidence file names must be unique")
        with self._locked():
            try:
                evidence = self._write(files, violation, subject)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise
            self._head = ChainHead(evidence.seq, evidence.id, evidence.hash)
            self.created += 1
            self.last_error = ""
            return evidence

    def for_violation(self, violation: Violation, readings: Iterable[Reading],
                      extra: Sequence[EvidenceFile] = ()) -> Evidence:
        """The bundle for a started violation: the readings that prove it, plus any images/clips."""
        about = {"violation_key": violation.key, "kind": violation.kind}
        return self.create([readings_file(readings, about=about), *extra], violation=violation)

    def _write(self, files: Sequence[EvidenceFile], violation: Violation | None,
               subject: Mapping[str, Any] | None) -> Evidence:
        created = self.now().astimezone(timezone.utc)
        seq = self._head.seq + 1
        bundle_id = f"{seq:08d}-{created:%Y%m%dT%H%M%S}Z-{secrets.token_hex(2)}"
        tmp = self.root / f".tmp-{bundle_id}"
        tmp.mkdir()
        try:
            entries = []
            for f in files:
                if f.move_from is not None:
                    digest_f, size = _move_durably(f.move_from, tmp / f.name)
                else:
                    _write_durably(tmp / f.name, f.data)
                    digest_f, size = sha256_hex(f.data), len(f.data)
                media = f.media_type or MEDIA_TYPES.get(Path(f.name).suffix.lower(), "application/octet-stream")
                entries.append({"name": f.name, "sha256": digest_f, "size": size, "media_type": media})
            manifest: dict[str, Any] = {
                "format": FORMAT, "id": bundle_id, "seq": seq, "site": self.site, "device": self.device,
                "created": iso(created), "clock_synchronized": self.clock_sync(),
                **({"clock_steps": steps} if (steps := self._steps()) else {}),
                "violation": violation_json(violation) if violation else None,
                **_finite(self.place),
                "subject": _finite(dict(subject or {})), "files": entries, "prev_hash": self._head.hash,
                "key_id": self.signer.key_id, "public_key": self.signer.public_b64,
            }
            manifest["signature"] = self.signer.sign(canonical_bytes(manifest))
            data = canonical_bytes(manifest)
            _write_durably(tmp / MANIFEST, data)
            final = self.root / bundle_id
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        digest = sha256_hex(data)
        _write_durably(self.root / HEAD_FILE, json.dumps({"seq": seq, "id": bundle_id, "hash": digest}).encode(),
                       atomic=True)
        return Evidence(bundle_id, seq, final, digest, manifest)

    def _steps(self) -> list[dict[str, Any]]:
        """Wall-clock steps since the previous bundle: a reader needs them to judge this bundle's times."""
        return list(self.clock_steps()) if self.clock_steps is not None else []

    # --- the chain head across restarts ---------------------------------------------------------

    @property
    def head(self) -> ChainHead:
        return self._head

    def _recover_head(self) -> ChainHead:
        """The persisted head, moved forward over a bundle renamed into place before a crash."""
        head = GENESIS
        try:
            saved = json.loads((self.root / HEAD_FILE).read_text(encoding="utf-8"))
            head = ChainHead(int(saved["seq"]), str(saved["id"]), str(saved["hash"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("evidence chain head %s unreadable (%s); rebuilding it from the bundles", HEAD_FILE, exc)
        later = sorted((int(m.group(1)), p) for p in self.root.iterdir()
                       if (m := BUNDLE_DIR.fullmatch(p.name)) and int(m.group(1)) > head.seq)
        if head is GENESIS and later:
            # No head file at all: continue after the newest readable bundle there is.
            for seq, path in reversed(later):
                try:
                    data = (path / MANIFEST).read_bytes()
                    loads_strict(data)
                    return ChainHead(seq, path.name, sha256_hex(data))
                except (OSError, ValueError) as exc:
                    log.error("evidence bundle %s unreadable (%s)", path, exc)
            return ChainHead(later[-1][0], None, GENESIS_HASH)
        for seq, path in later:
            try:
                data = (path / MANIFEST).read_bytes()
                manifest = loads_strict(data)
            except (OSError, ValueError) as exc:
                log.error("evidence bundle %s unreadable (%s); the chain continues from seq %d", path, exc, head.seq)
                break
            if seq != head.seq + 1 or not isinstance(manifest, dict) or manifest.get("prev_hash") != head.hash:
                break
            head = ChainHead(seq, path.name, sha256_hex(data))
        return head

    def _remove_partial(self) -> None:
        for path in self.root.glob(".tmp-*"):
            log.warning("removing incomplete evidence bundle %s (written when the box stopped)", path)
            shutil.rmtree(path, ignore_errors=True)

    def _locked(self) -> _Locked:
        return _Locked(self._lock, self.root / ".lock")

    # --- component ------------------------------------------------------------------------------

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def health(self) -> Mapping[str, Any]:
        return {"state": "down" if self.last_error else "ok", "device_key_id": self.signer.key_id,
                "chain_seq": self._head.seq, "chain_head": self._head.id, "created": self.created,
                "last_error": self.last_error}


class _Locked:
    """The thread lock, then an flock on ROOT/.lock, released in reverse order."""

    def __init__(self, lock: threading.Lock, path: Path):
        self.lock = lock
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            if self.fd >= 0:
                os.close(self.fd)
            self.lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        finally:
            self.lock.release()


def _write_durably(path: Path, data: bytes, *, atomic: bool = False) -> None:
    target = path.with_name(f".{path.name}.tmp") if atomic else path
    with open(target, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if atomic:
        os.replace(target, path)
        _fsync_dir(path.parent)


def _move_durably(source: Path, path: Path) -> tuple[str, int]:
    """Move `source` to `path` (a rename on one filesystem, else a copy) and fsync it; (SHA-256, size).

    Hashed in pieces: a clip is never read into memory whole. The source is gone after.
    """
    try:
        os.replace(source, path)
    except OSError:  # another filesystem: copy, then drop the source
        shutil.copyfile(source, path)
        source.unlink(missing_ok=True)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    return sha256_file(path), path.stat().st_size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(config: AgentConfig, *, now: Callable[[], datetime] = utc_now,
               clock_sync: Callable[[], bool | None] = clock_synchronized,
               clock_steps: Callable[[], list[dict[str, Any]]] | None = None) -> EvidenceStore:
    """The store for a config: DATA_DIR/evidence, signed with the device key (made if absent)."""
    data_dir = Path(config.storage.data_dir)
    key_path = config.evidence.device_key or data_dir / "keys" / "device.key"
    return EvidenceStore(data_dir / "evidence", device_signer(Path(key_path)), config.site.id, config.device.id,
                         now=now, clock_sync=clock_sync, clock_steps=clock_steps, place=config.place())
