"""`edge-agent verify-evidence PATH [--chain] [--key KEY]`: is this evidence intact and signed?"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.evidence.bundle import MANIFEST
from edge_agent.evidence.verify import BundleReport, verify_bundle, verify_chain
from edge_agent.security.keys import KeyFileError, key_id, load_public_key, parse_public_key

NAME = "verify-evidence"
HELP = "check an evidence bundle (file hashes, signature) or, with --chain, a directory of bundles"
DESCRIPTION = (
    "Check an evidence bundle: every file's SHA-256, the manifest's canonical form and its Ed25519 "
    "signature. With --chain, PATH is the evidence directory (DATA_DIR/evidence) and the links between "
    "bundles are checked too. Exit 0 when everything holds, 1 otherwise."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a bundle directory (or its manifest.json); with --chain, "
                                                  "the directory holding the bundles")
    parser.add_argument("--chain", action="store_true", help="check every bundle under PATH and their links")
    parser.add_argument("--key", help="the device's public key (base64, or a file): proves who signed; "
                                      "without it the key inside each bundle is used")


def _key(text: str) -> Ed25519PublicKey:
    path = Path(text)
    return load_public_key(path) if path.exists() else parse_public_key(text)


def _line(report: BundleReport) -> list[str]:
    name = report.id or report.path.name
    if report.ok:
        return [f"OK    {name}: seq {report.seq}, {report.files} file(s), signed by key {report.key_id}"]
    return [f"FAIL  {name}: {problem}" for problem in report.problems]


def run(args: argparse.Namespace) -> int:
    key = None
    if args.key:
        try:
            key = _key(args.key)
        except KeyFileError as exc:
            print(f"FAIL  --key: {exc}")
            return 1
    path: Path = args.path
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if not path.is_dir():
        print(f"FAIL  {path}: no such directory")
        return 1
    if key is None:
        print("note  no --key given: signatures are checked against the key inside each bundle "
              "(proves integrity, not origin)")
    else:
        print(f"note  expecting device key {key_id(key)}")
    if not args.chain:
        report = verify_bundle(path, key)
        for line in _line(report):
            print(line)
        return 0 if report.ok else 1
    chain = verify_chain(path, key)
    for report in chain.bundles:
        for line in _line(report):
            print(line)
    for note in chain.notes:
        print(f"note  {note}")
    for problem in chain.problems:
        print(f"FAIL  chain: {problem}")
    if chain.ok:
        print(f"OK    chain: {len(chain.bundles)} bundle(s), links intact")
    return 0 if chain.ok else 1
