"""Ed25519 keys: the device's own signing key, and the bureau's public keys it trusts.

A public key travels as base64 of its 32 raw bytes; its *key id* is the first 8 bytes of
SHA-256 over those raw bytes, in hex (16 characters). Private keys are stored as
unencrypted PKCS#8 PEM, mode 0600 in folders made 0700, which `openssl pkey` also reads.
Modes are set explicitly, so a umask of 000 (a shell, a misconfigured unit) changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.files import write_atomic

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700


class KeyFileError(ValueError):
    """A key that cannot be read or parsed; the message says which and why."""


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey | bytes) -> str:
    raw = public if isinstance(public, bytes) else raw_public(public)
    return hashlib.sha256(raw).digest()[:8].hex()


def public_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public(key)).decode("ascii")


def parse_public_key(text: str | bytes) -> Ed25519PublicKey:
    """A public key from base64 of the raw 32 bytes, or from a PEM SubjectPublicKeyInfo."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise KeyFileError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"PEM key is {type(key).__name__}, not Ed25519")
        return key
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("public key is neither PEM nor base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key file (base64 or PEM); a private key file is accepted and its public half used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        return parse_public_key(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a private key; one that others may read or change still loads, with a warning."""
    try:
        with path.open("rb") as fh:
            data = fh.read()
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        log.warning("private key %s has mode %04o: others on this machine can read or replace it; "
                    "run: chmod 600 %s", path, mode, path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: key is {type(key).__name__}, not Ed25519")
    return key


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_dirs(folder: Path) -> None:
    """Create `folder` and any missing parents 0700, whatever the umask; existing ones are left as they are."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write through a temp file with exactly `mode` from the first byte, fsync, then rename."""
    _make_dirs(path.parent)
    write_atomic(path, data, mode)


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write atomically with mode 0600 from the first byte (never briefly readable by others)."""
    _write_atomic(path, private_pem(key), PRIVATE_MODE)


@dataclass(frozen=True)
class Signer:
    """A private key with its public key id, ready to sign canonical bytes."""

    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    @property
    def public_b64(self) -> str:
        return public_b64(self.public)

    def sign(self, data: bytes) -> str:
        """Base64 of the 64-byte Ed25519 signature."""
        return base64.b64encode(self.private.sign(data)).decode("ascii")


def verify(public: Ed25519PublicKey, signature_b64: str, data: bytes) -> bool:
    """True only for a well-formed base64 signature that verifies over `data`."""
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(sig) != 64 or base64.b64encode(sig).decode("ascii") != signature_b64:
        return False  # only the one canonical spelling: no second form of the same signature
    try:
        public.verify(sig, data)
    except InvalidSignature:
        return False
    return True


def device_signer(path: Path) -> Signer:
    """The box's own key: loaded, or generated on first start (0600 in a 0700 directory)."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        write_private_key(path, key)
        _write_atomic(path.with_name(path.name + ".pub"), (public_b64(key.public_key()) + "\n").encode("ascii"),
                      PUBLIC_MODE)
    return Signer(load_private_key(path))
