"""`edge-bureau keys`: register or approve a device's public key; show fingerprints and the bureau's key."""

from __future__ import annotations

import argparse
import sys
import time

from bureau.cli._common import EXIT_CONFIG, add_config, load_or_report

NAME = "keys"
HELP = "device keys: register (from `edge-fw keys` output), approve a key seen, list; the bureau's own key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    reg = sub.add_parser("register", help="trust KEY (base64, PEM or a key file) for SITE/DEVICE")
    reg.add_argument("target", metavar="SITE/DEVICE")
    reg.add_argument("key")
    add_config(reg)
    app = sub.add_parser("approve", help="trust the key SITE/DEVICE was seen signing with (pending approval)")
    app.add_argument("target", metavar="SITE/DEVICE")
    add_config(app)
    lst = sub.add_parser("list", help="every device's key state and fingerprints")
    add_config(lst)
    bur = sub.add_parser("bureau", help="the bureau's command key: its public half goes into bureau.trusted_keys")
    add_config(bur)


def _target(text: str) -> tuple[str, str] | None:
    from bureau.messages import TARGET

    site, _, device = text.partition("/")
    return (site, device) if TARGET.fullmatch(site) and TARGET.fullmatch(device) else None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bureau.commands import bureau_signer
    from bureau.export import fingerprint
    from bureau.store import open_store
    from edge_agent.security.keys import KeyFileError, key_id, load_public_key, parse_public_key, public_b64

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.action == "bureau":
        signer = bureau_signer(config.key_file)
        print(f"key id      {signer.key_id}\npublic key  {signer.public_b64}\nfingerprint "
              f"{fingerprint(signer.public_b64)}\nbox config: bureau: {{trusted_keys: [{{name: bureau, "
              f"public_key: {signer.public_b64}}}]}}")
        return 0
    store, _files = open_store(config)
    if args.action == "list":
        for d in store.fleet():
            dev = store.device(d["site"], d["device"]) or {}
            print(f"{d['site']}/{d['device']}\t{d['key_state']}\tregistered {d['key_id'] or '-'}\t"
                  f"seen {d['seen_key_id'] or '-'}\t{fingerprint(dev.get('key_b64'))}")
        return 0
    target = _target(args.target)
    if target is None:
        print("edge-bureau keys: expected SITE/DEVICE", file=sys.stderr)
        return 1
    site, device = target
    if args.action == "approve":
        kid = store.approve_seen_key(site, device, "cli", time.time())
        if kid is None:
            print(f"edge-bureau keys: {site}/{device} has not been seen signing anything yet", file=sys.stderr)
            return 1
        store.audit("cli", "key", f"{site}/{device}", f"approved seen key {kid}", time.time())
        print(f"{site}/{device}: key {kid} approved")
        return 0
    try:
        path = Path(args.key)
        key = load_public_key(path) if path.exists() else parse_public_key(args.key)
    except KeyFileError as exc:
        print(f"edge-bureau keys: {exc}", file=sys.stderr)
        return 1
    kid = key_id(key)
    store.register_key(site, device, public_b64(key), kid, "cli", time.time())
    store.audit("cli", "key", f"{site}/{device}", f"registered key {kid}", time.time())
    dev = store.device(site, device) or {}
    print(f"{site}/{device}: key {kid} registered ({fingerprint(public_b64(key))})")
    if dev.get("key_state") == "changed":
        print(f"warning: the box was seen signing with another key ({dev.get('seen_key_id')})", file=sys.stderr)
    return 0
