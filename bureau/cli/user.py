"""`edge-bureau user add NAME --role ROLE` (password from a prompt, --password-file or $BUREAU_PASSWORD),
and `user list`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from pathlib import Path

from bureau.cli._common import EXIT_CONFIG, add_config, load_or_report
from bureau.store.base import ROLES

NAME = "user"
HELP = "add or change a console user (viewer, operator, admin), or list them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create a user, or set an existing user's role and password")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-file", type=Path, help="read the password from this file's first line")
    add_config(add)
    lst = sub.add_parser("list", help="the users and their roles")
    add_config(lst)


def run(args: argparse.Namespace) -> int:
    from bureau.auth import hash_password
    from bureau.messages import TARGET
    from bureau.store import open_store

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    store, _files = open_store(config)
    if args.action == "list":
        for u in store.users():
            print(f"{u['name']}\t{u['role']}")
        return 0
    if not TARGET.fullmatch(args.name):
        print("edge-bureau user: a name is letters, digits, '.', '_' or '-' (up to 64)", file=sys.stderr)
        return 1
    if args.password_file:
        password = args.password_file.read_text(encoding="utf-8").splitlines()[0]
    elif os.environ.get("BUREAU_PASSWORD"):
        password = os.environ["BUREAU_PASSWORD"]
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("edge-bureau user: the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 8:
        print("edge-bureau user: a password has at least 8 characters", file=sys.stderr)
        return 1
    store.add_user(args.name, args.role, hash_password(password), time.time())
    store.audit("cli", "user", args.name, f"role {args.role}", time.time())
    print(f"user {args.name}: {args.role}")
    return 0
