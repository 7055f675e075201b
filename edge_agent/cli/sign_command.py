"""`edge-agent sign-command`: the bureau side, for operators and tests: sign one command.

Prints one JSON line, ready for `mosquitto_pub -t PREFIX/SITE/DEVICE/cmd/NAME -s`; the
topic goes to stderr. Lives in `edge-agent`, not `edge-fw`, because it must produce the
very canonical form the daemon verifies (edge_agent/security), and field tools may not
import the daemon.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge_agent.config.security import KNOWN_COMMANDS
from edge_agent.security.bureau_command import FORMAT_VERSION, args_problem, sign_command
from edge_agent.security.canonical import CanonicalError, canonical_bytes
from edge_agent.security.keys import KeyFileError, Signer, load_private_key

NAME = "sign-command"
HELP = "sign a bureau command with a bureau private key (output for mosquitto_pub -s)"

EPILOG = """arguments of each command:
  shout         clip=ID | text=TEXT, repeat=1..10
  relay         relay=ID state=on|off|auto, duration_s=1..3600 (with on only); the box obeys only
                relays in its bureau.relays_allowed (default spray, strobe) and keeps their
                max_on_s / min_off_s protection
  spray, strobe state=on|off|auto, duration_s=1..3600: `relay` for that relay
  snapshot      camera=ID (optional)
  relearn_view  camera=ID
  ping          (none)

example: edge-agent sign-command relay --key bureau.key --site S --device D \\
           --arg relay=pump --arg state=on --arg duration_s=300 | mosquitto_pub -t TOPIC -s
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("name", choices=KNOWN_COMMANDS, metavar="name",
                        help=f"the command: {', '.join(KNOWN_COMMANDS)} (arguments below)")
    parser.add_argument("--key", type=Path, required=True, help="the bureau's private key (edge-fw keys generate)")
    parser.add_argument("--site", required=True, help="target site id")
    parser.add_argument("--device", required=True, help="target device id")
    parser.add_argument("--arg", action="append", default=[], metavar="K=V",
                        help="an argument; V is read as JSON when it parses (60, true), else as text. Repeatable")
    parser.add_argument("--args-json", help="all arguments as one JSON object")
    parser.add_argument("--lifetime", type=int, default=120, help="seconds until it expires (default 120)")
    parser.add_argument("--id", help="command id (default: a random one)")
    parser.add_argument("--prefix", default="edge/v1", help="topic prefix, for the hint on stderr")


def _args(pairs: list[str], as_json: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if as_json:
        loaded = json.loads(as_json)
        if not isinstance(loaded, dict):
            raise ValueError("--args-json must be a JSON object")
        args.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg {pair!r}: expected K=V")
        try:
            args[key] = json.loads(text)
        except ValueError:
            args[key] = text
    return args


def run(args: argparse.Namespace) -> int:
    try:
        signer = Signer(load_private_key(args.key))
        now = datetime.now(timezone.utc).replace(microsecond=0)
        body = {
            "v": FORMAT_VERSION,
            "id": args.id or f"c-{secrets.token_hex(6)}",
            "name": args.name,
            "site": args.site,
            "device": args.device,
            "issued_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=args.lifetime)).isoformat(),
            "nonce": secrets.token_hex(16),
            "args": _args(args.arg, args.args_json),
        }
        problem = args_problem(args.name, body["args"])
        if problem:
            raise ValueError(f"{args.name}: {problem}")
        signed = sign_command(body, signer)
        line = canonical_bytes(signed).decode("utf-8")
    except (KeyFileError, ValueError, CanonicalError) as exc:
        print(f"edge-agent sign-command: error: {exc}", file=sys.stderr)
        return 1
    print(f"topic: {args.prefix.rstrip('/')}/{args.site}/{args.device}/cmd/{args.name}", file=sys.stderr)
    print(line)
    return 0
