"""`edge-bureau simulate-fleet --boxes N`: N simulated boxes publishing the agent's real messages.

For load tests and demos: each box has its own connection and Last Will, telemetry every
minute, its status every 5 minutes, violations with signed evidence bundles, and outages
after which its outbox is replayed. Device keys stay in --folder (register them in the
console: each box's is FOLDER/box-NNNNN/keys/device.key.pub). --speed runs the boxes'
clock faster (60: an hour of a fleet's traffic in a minute).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from edge_agent.cli._common import host_port

NAME = "simulate-fleet"
HELP = "publish N simulated boxes' real messages to a broker (load tests, demos)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--boxes", type=int, required=True, help="how many boxes (two per site)")
    parser.add_argument("--mqtt", type=host_port, default=("127.0.0.1", 1883), metavar="HOST:PORT",
                        help="the broker (default 127.0.0.1:1883)")
    parser.add_argument("--prefix", default="edge/v1", help="topic prefix (default edge/v1)")
    parser.add_argument("--folder", type=Path, default=Path("sim-fleet"), help="device keys and evidence of the boxes")
    parser.add_argument("--speed", type=float, default=1.0, help="clock speed-up (default 1: real rates)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: never)")
    parser.add_argument("--outages-per-hour", type=float, default=0.2, help="per box, of the boxes' clock")
    parser.add_argument("--outage-s", type=float, default=120.0, help="mean outage length, boxes' clock seconds")
    parser.add_argument("--violations-per-hour", type=float, default=0.3, help="per box, of the boxes' clock")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from bureau.fleet import FleetSim, make_boxes

    logging.basicConfig(level="WARNING", format="fleet %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.boxes < 1:
        print("simulate-fleet: --boxes must be at least 1", file=sys.stderr)
        return 2
    boxes = make_boxes(args.boxes, args.folder, args.prefix)
    host, port = args.mqtt
    sim = FleetSim(boxes, host, port, speed=args.speed, outages_per_hour=args.outages_per_hour,
                   outage_s=args.outage_s,
                   violations_per_hour=args.violations_per_hour, seed=args.seed)
    stop = [False]

    def _term(signum: int, frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    print(f"simulate-fleet: {args.boxes} boxes -> {host}:{port} ({args.prefix}/#), speed x{args.speed:g}, "
          f"keys in {args.folder}", flush=True)
    for n, stats in enumerate(sim.run(args.duration), 1):
        if n % 10 == 0:
            print(f"published {stats.published}, violations {stats.violations}, outages {stats.outages}, "
                  f"reconnects {stats.reconnects}", flush=True)
        if stop[0]:
            sim.stop()
            break
    s = sim.stats
    print(f"simulate-fleet: done: {s.published} published, {s.violations} violations, {s.outages} outages, "
          f"{s.reconnects} reconnects", flush=True)
    return 0
