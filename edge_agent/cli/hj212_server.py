"""`edge-agent hj212-server`: a reference HJ 212 platform for a technician's bench check.

Point a box's `hj212:` section at this machine; every packet is printed with its CRC and
length verdict, and data that asks for an answer gets its 9014.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from edge_agent.hj212.server import Hj212Server, Received

NAME = "hj212-server"
HELP = "run a reference HJ 212-2017 platform that checks, answers and logs packets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on (default 127.0.0.1; 0.0.0.0 for a box on the LAN).")
    parser.add_argument("--port", type=int, default=9212, help="TCP port (default 9212).")
    parser.add_argument("--no-answer", action="store_true",
                        help="Never answer data (9014): shows how a box copes with a silent platform.")


def _print(rec: Received) -> None:
    text = rec.raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
    p = rec.packet
    what = f"CN={p.cn} QN={p.qn}" if p is not None else ""
    print(f"{rec.time.isoformat(timespec='milliseconds')} {rec.peer} {rec.verdict.upper():10} {what} {text}",
          flush=True)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    server = Hj212Server(args.host, args.port, answer_data=not args.no_answer, on_frame=_print)
    try:
        host, port = server.start()
    except OSError as exc:
        print(f"hj212-server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"hj212-server: listening on {host}:{port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    finally:
        server.stop()
    return 0
