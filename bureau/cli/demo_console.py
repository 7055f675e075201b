"""`edge-bureau demo-console`: the console beside `edge-agent demo` (which starts it with --with-console).

Uses the demo's broker, signs with the bureau key the demo box trusts (DEMO_OUT/keys/bureau.key),
registers the demo box's device key from DEMO_OUT/data/keys/device.key.pub as an operator would,
creates the users `operator`, `viewer` and `admin` with fresh passwords, and prints the URL and logins.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import threading
import time
from pathlib import Path

from edge_agent.cli._common import host_port

NAME = "demo-console"
HELP = "the console for `edge-agent demo` (started by `edge-agent demo --with-console`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mqtt", type=host_port, required=True, metavar="HOST:PORT", help="the demo's broker")
    parser.add_argument("--demo-out", type=Path, required=True, help="the demo's --out folder")
    parser.add_argument("--port", type=int, default=8080, help="web console port on 127.0.0.1 (default 8080)")


def run(args: argparse.Namespace) -> int:
    import yaml

    from bureau.auth import hash_password
    from bureau.cli.serve import serve
    from bureau.config import BureauConfig
    from bureau.store import open_store
    from edge_agent.security.keys import KeyFileError, key_id, load_public_key, public_b64

    logging.basicConfig(level="WARNING", format="console %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    out = args.demo_out.resolve()
    box = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    site, device = box["site"]["id"], box["device"]["id"]
    host, port = args.mqtt
    config = BureauConfig.model_validate({
        "mqtt": {"host": host, "port": port, "client_id": "edge-bureau-demo"},
        "store": {"data_dir": str(out / "bureau")},
        "web": {"host": "127.0.0.1", "port": args.port},
        "commands": {"key_file": str(out / "keys" / "bureau.key")},
        "sites": {site: {"name": "演示工地 Demo site"}},
    })
    store, _files = open_store(config)
    logins = {}
    for name, role in (("operator", "operator"), ("viewer", "viewer"), ("admin", "admin")):
        logins[name] = secrets.token_urlsafe(9)
        store.add_user(name, role, hash_password(logins[name]), time.time())

    def register() -> None:
        pub = out / "data" / "keys" / "device.key.pub"
        deadline = time.monotonic() + 120
        while not pub.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        try:
            key = load_public_key(pub)
        except KeyFileError as exc:
            print(f"console: could not register the demo box's key: {exc}", file=sys.stderr)
            return
        store.register_key(site, device, public_b64(key), key_id(key), "demo", time.time())
        store.audit("demo", "key", f"{site}/{device}", f"registered key {key_id(key)}", time.time())

    threading.Thread(target=register, daemon=True).start()
    banner = (f"console: open http://127.0.0.1:{args.port}/ and log in as operator / {logins['operator']}\n"
              f"console: (also viewer / {logins['viewer']}, admin / {logins['admin']})")
    return serve(config, banner)
