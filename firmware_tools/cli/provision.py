"""`edge-fw provision --site S --device D --broker URL`: make a fresh box ready for its first start.

Writes a starting config from the shipped example (this site and device, this broker, the
bureau's key; the example's meters, cameras, relays and HJ 212 left out until the technician
adds this box's own, unless `--keep-example-devices`), creates the device's evidence key
(Ed25519, 0600 in a 0700 folder, owned by the service user), prints its fingerprint and one
line for the bureau's console, and runs `edge-agent doctor`.

Idempotent: a second run with the same answers changes nothing. An existing device key is
never replaced unless `--replace-key` (the old one is kept beside it: evidence it signed must
stay verifiable); an existing config that differs is left alone unless `--force-config` (the
old one is kept as `.bak`). Field tools do not import the daemon, so the config is checked and
doctor is run through the `edge-agent` command of the same installation.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.cli.keys import _load_public, key_id, raw_public

NAME = "provision"
HELP = "write a starting config, create the device key, print the registration record, run doctor"
DEVICE_SECTIONS = ("meters", "cameras", "relays", "hj212", "microphone", "actions")
HEADER = """\
# edge-agent config written by `edge-fw provision` from the shipped example ({example}).
# Every section is explained, commented, in that file. The example's meters, cameras, relays and
# HJ 212 link are left out: add this box's own, then `edge-agent check-config --strict` this file.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", required=True, help="site id, as registered with the bureau")
    parser.add_argument("--device", required=True, help="this box's id within the site")
    parser.add_argument("--broker", required=True, help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)")
    parser.add_argument("--site-name", help="the site's name for people (default: the site id)")
    parser.add_argument("--ca-file", type=Path, help="with mqtts://: the CA that signed the broker's certificate")
    parser.add_argument("--mqtt-user", help="broker user name (default: none)")
    parser.add_argument("--mqtt-password-file", type=Path, help="file holding the broker password (0600)")
    parser.add_argument("--bureau-key", action="append", default=[], metavar="KEY",
                        help="the bureau's command key: base64, or a .pub/.pem file (repeatable)")
    parser.add_argument("--config", type=Path, default=Path("/etc/edge-agent/config.yaml"), help="config to write")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/edge-agent"), help="the agent's data dir")
    parser.add_argument("--user", default="edge-agent", help="service user that owns the key (if it exists)")
    parser.add_argument("--example", type=Path, help="the example config to start from (default: the shipped one)")
    parser.add_argument("--keep-example-devices", action="store_true",
                        help="keep the example's meters, cameras, relays and HJ 212 sections")
    parser.add_argument("--force-config", action="store_true", help="replace an existing, different config")
    parser.add_argument("--replace-key", action="store_true", help="make a new device key (the old one is kept)")
    parser.add_argument("--no-doctor", action="store_true", help="do not run `edge-agent doctor`")


def find_example(given: Path | None) -> Path:
    candidates = [given] if given else [
        Path(sys.prefix) / "share/edge-agent/config/example.yaml",  # setup.py data_files
        Path("/usr/share/edge-agent/config/example.yaml"),
        Path(__file__).resolve().parents[2] / "config/example.yaml",  # a checkout
    ]
    for path in candidates:
        if path is not None and path.is_file():
            return path
    raise FileNotFoundError("no example config found; give --example PATH")


def broker_section(url: str, ca_file: Path | None, user: str | None, password_file: Path | None) -> dict[str, Any]:
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ValueError(f"--broker {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if parts.password:
        raise ValueError("--broker: no password in the URL; use --mqtt-password-file")
    tls = parts.scheme in ("mqtts", "ssl")
    section: dict[str, Any] = {"host": parts.hostname, "port": parts.port or (8883 if tls else 1883)}
    if tls:
        section["tls"] = {"ca_file": str(ca_file)} if ca_file else {}
    if user or parts.username:
        section["username"] = user or parts.username
    if password_file:
        if not section.get("username"):
            raise ValueError("--mqtt-password-file needs --mqtt-user")
        section["password"] = {"file": str(password_file)}
    return section


def bureau_keys(values: list[str]) -> list[dict[str, str]]:
    out = []
    for i, value in enumerate(values):
        path = Path(value)
        public = _load_public(path) if path.is_file() else None
        if public is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(value, validate=True))
        out.append({"name": f"bureau-{i + 1}-{key_id(public)[:8]}",
                    "public_key": base64.b64encode(raw_public(public)).decode("ascii")})
    return out


def starting_config(args: argparse.Namespace, example: Path) -> str:
    data = yaml.safe_load(example.read_text(encoding="utf-8")) or {}
    if not args.keep_example_devices:
        for name in DEVICE_SECTIONS:
            data.pop(name, None)
    site = data.setdefault("site", {})
    site.update(id=args.site, name=args.site_name or args.site)
    site.pop("location", None)  # the example's coordinates are not this site's: the bureau's map would lie
    data["device"] = {**data.get("device", {}), "id": args.device}
    mqtt = {k: v for k, v in data.get("mqtt", {}).items() if k not in ("host", "port", "tls", "username", "password")}
    data["mqtt"] = {**broker_section(args.broker, args.ca_file, args.mqtt_user, args.mqtt_password_file), **mqtt}
    data.setdefault("storage", {})["data_dir"] = str(args.data_dir)
    keys = bureau_keys(args.bureau_key)
    bureau = {k: v for k, v in data.get("bureau", {}).items() if k != "trusted_keys"}
    data["bureau"] = {"trusted_keys": keys, **bureau} if keys else bureau
    return HEADER.format(example=example) + yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _owner(user: str) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        if owner:
            os.fchown(fh.fileno(), *owner)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def device_key(key_path: Path, replace: bool, owner: tuple[int, int] | None) -> tuple[Any, str]:
    """The device's public key and what was done: created, kept, or replaced."""
    for folder in (key_path.parent.parent, key_path.parent):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(key_path.parent, 0o700)
    if owner:
        os.chown(key_path.parent.parent, *owner)
        os.chown(key_path.parent, *owner)
    action = "created"
    if key_path.exists():
        if not replace:
            return _load_public(key_path), "kept (existing key; --replace-key to make a new one)"
        backup = key_path.with_name(f"{key_path.name}.replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        os.replace(key_path, backup)
        action = f"replaced (the old key is kept as {backup.name})"
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write(key_path, pem, 0o600, owner)
    public = private.public_key()
    _write(key_path.with_name(key_path.name + ".pub"), base64.b64encode(raw_public(public)) + b"\n", 0o644, owner)
    return public, action


def run(args: argparse.Namespace) -> int:
    try:
        example = find_example(args.example)
        text = starting_config(args, example)
    except (OSError, ValueError) as exc:
        print(f"edge-fw provision: {exc}", file=sys.stderr)
        return 2
    owner = _owner(args.user)
    config: Path = args.config
    config.parent.mkdir(parents=True, exist_ok=True)
    if config.exists() and config.read_text(encoding="utf-8") != text:
        if not args.force_config:
            print(f"edge-fw provision: {config} exists and differs from what provision would write; it is left "
                  "as it is (--force-config replaces it, keeping a .bak)", file=sys.stderr)
            return 1
        os.replace(config, config.with_name(config.name + ".bak"))
        config_action = "replaced (the old one is kept as .bak)"
    elif config.exists():
        config_action = "unchanged"
    else:
        config_action = "written"
    if config_action != "unchanged":
        group = (None, owner[1]) if owner else None
        _write(config, text.encode("utf-8"), 0o640, (0, group[1]) if group else None)
    check = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(config)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        print(check.stderr, file=sys.stderr)
        print(f"edge-fw provision: {config} does not pass check-config (above)", file=sys.stderr)
        return 2
    public, key_action = device_key(args.data_dir / "keys" / "device.key", args.replace_key, owner)
    raw = raw_public(public)
    b64 = base64.b64encode(raw).decode("ascii")
    print(f"config      {config}: {config_action}")
    print(f"device key  {args.data_dir / 'keys' / 'device.key'}: {key_action}")
    print(f"key id      {key_id(public)}")
    print(f"fingerprint SHA256:{base64.b64encode(hashlib.sha256(raw).digest()).decode('ascii').rstrip('=')}")
    record = {"site": args.site, "device": args.device, "key_id": key_id(public), "public_key": b64,
              "broker": args.broker, "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()}
    print("register    " + json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    print(f"            (at the bureau: edge-bureau keys register {args.site}/{args.device} {b64})")
    if args.no_doctor:
        return 0
    print("\n-- edge-agent doctor --", flush=True)
    doctor = subprocess.run([sys.executable, "-m", "edge_agent", "doctor", "--config", str(config)])
    if doctor.returncode != 0:
        print("\nprovisioned; doctor found problems above: fix them, then `edge-agent doctor` again")
    return 0
