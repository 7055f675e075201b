"""`edge-fw keys`: make Ed25519 key pairs (bureau or device) and show a key's public half.

Works on plain files with `cryptography` alone (field tools do not import the daemon). The
formats are the daemon's: private key = unencrypted PKCS#8 PEM, mode 0600; public key =
base64 of the 32 raw bytes; key id = first 8 bytes of SHA-256 of the raw public key, hex.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

NAME = "keys"
HELP = "make an Ed25519 key pair (bureau or device), or show a key's public half and key id"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write KEY (private, 0600) and KEY.pub; print the public key")
    gen.add_argument("key", type=Path, help="where to write the private key, e.g. bureau.key")
    gen.add_argument("--role", choices=("bureau", "device"), default="bureau",
                     help="bureau: signs commands; device: signs evidence (default bureau)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing key (it is lost)")
    show = sub.add_parser("show-public", help="print the public key and key id of a private or public key file")
    show.add_argument("key", type=Path, help="e.g. /var/lib/edge-agent/keys/device.key")


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Same definition as edge_agent.security.keys.key_id (a test holds the two together)."""
    return hashlib.sha256(raw_public(key)).digest()[:8].hex()


def _load_public(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return private.public_key()
    if data.strip().startswith(b"-----BEGIN"):
        public = serialization.load_pem_public_key(data)
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return public
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))


def _print_public(key: Ed25519PublicKey, label: str, role: str) -> None:
    b64 = base64.b64encode(raw_public(key)).decode("ascii")
    print(f"public_key: {b64}")
    print(f"key_id:     {key_id(key)}")
    if role == "bureau":
        print("\n# for the box's config.yaml:\nbureau:\n  trusted_keys:\n"
              f"    - name: {label}\n      public_key: {b64}")


def _generate(args: argparse.Namespace) -> int:
    path: Path = args.key
    if path.exists() and not args.force:
        print(f"edge-fw keys: error: {path} exists (use --force to replace it)", file=sys.stderr)
        return 1
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, path)
    pub = path.with_name(path.name + ".pub")
    pub.write_text(base64.b64encode(raw_public(key.public_key())).decode("ascii") + "\n", encoding="ascii")
    print(f"wrote {path} (private, keep it secret) and {pub}", file=sys.stderr)
    _print_public(key.public_key(), path.stem, args.role)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "generate":
        return _generate(args)
    try:
        key = _load_public(args.key)
    except (OSError, ValueError, TypeError) as exc:
        print(f"edge-fw keys: error: {args.key}: {exc}", file=sys.stderr)
        return 1
    _print_public(key, args.key.stem, "device")
    return 0
