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
from edge_agent.security.bureau_command import (
    FORMAT_VERSION,
    TALK_FORMATS,
    args_problem,
    sign_command,
    talk_args,
    talk_oversize,
    talk_part_leaf,
)
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
  talk          --audio FILE (Ogg/Opus or WAV, <= 300 kB, <= 30 s), reply_s=0..60 (optional). Audio over
                48 kB travels in parts: give --parts-dir DIR; the parts are written there and the
                mosquitto_pub line for each is printed on stderr (publish them before the command)
  listen        seconds=1..120 (the box obeys only with voice.listen_enabled)
  config        --file NEW.yaml --expect-file CURRENT.yaml (or --expect SHA256), confirm_s=5..900;
                or sections={...} via --args-json: replaces those top-level sections. One line per part
  model         --file HEAD.npz --card CARD.yaml, tolerance=0..1, min_accuracy=0..1. One line per part
  logs          lines=1..5000, minutes=1..10080, source=auto|journal|ring
  doctor        (none)

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
    # Fleet operations (edge_agent/fleet/sign.py): content sent in parts, one signed line per part.
    fleet = parser.add_argument_group("config and model")
    fleet.add_argument("--file", type=Path, help="config: the new YAML; model: the head (.npz)")
    fleet.add_argument("--card", type=Path, help="model: the head's card (YAML)")
    fleet.add_argument("--expect", help="config: sha256 of the config the box runs now (its status says it)")
    fleet.add_argument("--expect-file", type=Path, help="config: the config the box runs now, to hash")
    fleet.add_argument("--part-bytes", type=int, default=4096, help="bytes of content per part (default 4096)")
    _talk_arguments(parser)


def _talk_arguments(parser: argparse.ArgumentParser) -> None:
    talk = parser.add_argument_group("talk")
    talk.add_argument("--audio", type=Path, help="talk: the voice message (.ogg/.opus or .wav)")
    talk.add_argument("--format", choices=TALK_FORMATS, help="talk: the audio's container (default: from the suffix)")
    talk.add_argument("--parts-dir", type=Path, help="talk: where to write the parts of audio over 48 kB")


def _talk(args: argparse.Namespace, extra: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """The talk's args (audio fields from --audio, plus --arg ones) and its parts, written to --parts-dir."""
    if args.audio is None:
        raise ValueError("talk: give --audio FILE")
    fmt = args.format or {".ogg": "ogg", ".opus": "ogg", ".oga": "ogg", ".wav": "wav"}.get(args.audio.suffix.lower())
    if fmt is None:
        raise ValueError(f"talk: cannot tell the format of {args.audio.name}: give --format ogg|wav")
    talk, parts = talk_args(args.audio.read_bytes(), fmt)
    talk = {**extra, **talk}
    too_big = talk_oversize(talk)
    if too_big:
        raise ValueError(f"talk: {too_big}")
    if parts:
        if args.parts_dir is None:
            raise ValueError(f"talk: {talk['size']} bytes of audio travel in {len(parts)} parts: give --parts-dir DIR")
        args.parts_dir.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(parts):
            (args.parts_dir / f"{i}.bin").write_bytes(part)
    return talk, parts


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
        talk_parts: list[bytes] = []
        if args.name == "talk":
            body["args"], talk_parts = _talk(args, body["args"])
        elif args.audio is not None:
            raise ValueError(f"{args.name}: --audio goes with talk only")
        problem = args_problem(args.name, body["args"])
        if problem:
            raise ValueError(f"{args.name}: {problem}")
        from edge_agent.fleet.sign import expected_hash, part_args

        parts = part_args(args.name, body["args"], file=args.file, card=args.card,
                          expect_sha256=expected_hash(args.expect, args.expect_file), part_bytes=args.part_bytes)
        lines = []
        for i, part in enumerate(parts):
            one = {**body, "args": part}
            if len(parts) > 1:
                one.update(id=f"{body['id']}-p{i}", nonce=secrets.token_hex(16))
            lines.append(canonical_bytes(sign_command(one, signer)).decode("utf-8"))
        line = "\n".join(lines)
    except (KeyFileError, ValueError, CanonicalError, OSError) as exc:
        print(f"edge-agent sign-command: error: {exc}", file=sys.stderr)
        return 1
    base = f"{args.prefix.rstrip('/')}/{args.site}/{args.device}"
    for i in range(len(talk_parts)):
        leaf = talk_part_leaf(body["args"]["sha256"], i)
        print(f"part {i}: mosquitto_pub -q 1 -t {base}/{leaf} -f {args.parts_dir / f'{i}.bin'}", file=sys.stderr)
    print(f"topic: {base}/cmd/{args.name}", file=sys.stderr)
    print(line)
    return 0
