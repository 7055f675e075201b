"""`edge-agent hj212-server`: a reference HJ 212 platform for a technician's bench check.

Point a box's `hj212:` section at this machine; every packet is printed with its CRC and
length verdict (and, for a packet taken despite deviations from HJ 212-2017, the kinds of
deviation), and data that asks for an answer gets its 9014. `--strict` refuses such packets
instead. `--ask-past CN BEGIN END` asks each box, once it has spoken, for its past minute
(2051), hour (2061) or day (2031) data. Ctrl-C prints the deviations counted, by kind.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import datetime
from typing import Any

from edge_agent.hj212.server import PAST_DATA_CNS, Hj212Server, Received

NAME = "hj212-server"
HELP = "run a reference HJ 212-2017 platform that checks, answers and logs packets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on (default 127.0.0.1; 0.0.0.0 for a box on the LAN).")
    parser.add_argument("--port", type=int, default=9212, help="TCP port (default 9212).")
    parser.add_argument("--no-answer", action="store_true",
                        help="Never answer data (9014): shows how a box copes with a silent platform.")
    parser.add_argument("--strict", action="store_true",
                        help="Refuse (as MALFORMED) packets that deviate from HJ 212-2017 although their "
                             "length and CRC are right; by default they are taken and their deviations "
                             "printed and counted.")
    parser.add_argument("--timezone", default="Asia/Shanghai",
                        help="The platform's time zone: QN, BeginTime/EndTime, epoch QNs (default Asia/Shanghai).")
    parser.add_argument("--ask-past", nargs=3, metavar=("CN", "BEGIN", "END"),
                        help="Once each box has sent a valid packet, ask it for past data: CN 2051 (minute), "
                             "2061 (hour) or 2031 (day), BEGIN and END as YYYYMMDDhhmmss in the platform's "
                             "time zone; the request uses the MN and PW of the box's packet.")


def _print(rec: Received) -> None:
    text = rec.raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
    p = rec.packet
    what = f"CN={p.cn} QN={p.qn}" if p is not None else ""
    if rec.warnings:
        what += f" [warn {','.join(w.code for w in rec.warnings)}]"
    print(f"{rec.time.isoformat(timespec='milliseconds')} {rec.peer} {rec.verdict.upper():10} {what} {text}",
          flush=True)


def _past_request(args: argparse.Namespace) -> tuple[str, str, str] | None:
    if not args.ask_past:
        return None
    cn, begin, end = args.ask_past
    if cn not in PAST_DATA_CNS:
        raise ValueError(f"--ask-past: CN must be one of {sorted(PAST_DATA_CNS)}, not {cn!r}")
    for t in (begin, end):
        datetime.strptime(t, "%Y%m%d%H%M%S")  # ValueError if not a time
    return cn, begin, end


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        past = _past_request(args)
    except ValueError as exc:
        print(f"hj212-server: {exc}", file=sys.stderr)
        return 2
    asked: set[str] = set()
    server: Hj212Server

    def on_frame(rec: Received) -> None:
        _print(rec)
        p = rec.packet
        if past is None or p is None or rec.peer in asked or p.cn.startswith("9"):
            return
        asked.add(rec.peer)
        cn, begin, end = past
        qn = server.command(cn, ((("BeginTime", begin),), (("EndTime", end),)), mn=p.mn, pw=p.pw,
                            st=p.st, peer=rec.peer)
        print(f"hj212-server: asked {rec.peer} (MN {p.mn}) for CN {cn} data {begin}..{end}, QN {qn}",
              file=sys.stderr, flush=True)

    server = Hj212Server(args.host, args.port, answer_data=not args.no_answer, strict=args.strict,
                         tz=args.timezone, on_frame=on_frame)
    try:
        host, port = server.start()
    except OSError as exc:
        print(f"hj212-server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    mode = "strict" if args.strict else "tolerant"
    print(f"hj212-server: listening on {host}:{port} ({mode}; Ctrl-C to stop)", file=sys.stderr, flush=True)
    # Ctrl-C and SIGTERM stop it the same way, with the summary. Set here rather than left to
    # Python's KeyboardInterrupt: a parent that ignores SIGINT (a script's background job) passes
    # that on, and the server would then not stop on Ctrl-C at all.
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop.wait(0.5):  # timed: the handler runs when the main thread wakes
            pass
    finally:
        server.stop()
        counts = server.warning_counts()
        if counts:
            kinds = ", ".join(f"{k}={n}" for k, n in sorted(counts.items()))
            print(f"hj212-server: packets taken with deviations, by kind: {kinds}", file=sys.stderr, flush=True)
    return 0
