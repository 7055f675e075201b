"""`edge-fw simulate`: a Modbus RTU meter on a serial port, for tests, demos and bench work."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from drivers.modbus.profile import ProfileError, load_profile
from firmware_tools.simulator import FAULTS, SCENARIOS, SimMeter, Simulator, make_source

NAME = "simulate"
HELP = "run a simulated Modbus RTU meter on a serial port (socat pty or a USB adapter)"
DESCRIPTION = (
    "Answers Modbus RTU requests on PORT as the meter(s) described by --profile, with values from a "
    "scenario or constants, and optional fault injection. Pair it with the agent through "
    "`socat pty,raw,echo=0,link=/tmp/ttyMETER pty,raw,echo=0,link=/tmp/ttyAGENT`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", action="append", required=True,
                        help="profile name or YAML path; repeat for several meters on one bus")
    parser.add_argument("--port", required=True, help="serial port to serve, e.g. /tmp/ttyMETER")
    parser.add_argument("--address", type=int, action="append",
                        help="Modbus address (default: the profile's); repeat in step with --profile")
    parser.add_argument("--scenario", choices=SCENARIOS, default="quiet_day", help="value pattern (default quiet_day)")
    parser.add_argument("--value", action="append", metavar="[QUANTITY=]V",
                        help="constant value instead of a scenario: '65.2' for all, or 'noise_la=65.2'")
    parser.add_argument("--fault", choices=FAULTS, help="inject this fault into answers")
    parser.add_argument("--fault-rate", type=float, default=1.0, help="fraction of answers faulted (default 1)")
    parser.add_argument("--control", metavar="FILE",
                        help='JSON file re-read when it changes: {"values": {"noise_la": 80}, "fault": "crc"}')
    parser.add_argument("--baud", type=int, default=9600, help="baud rate of the port (a pty ignores it)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for scenarios and faults")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until stopped)")


def _values(items: list[str] | None) -> float | dict[str, float] | None:
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return float(items[0])
    out: dict[str, float] = {}
    for item in items:
        quantity, sep, number = item.partition("=")
        if not sep:
            raise ValueError(f"--value {item!r}: give QUANTITY=VALUE when several are given")
        out[quantity.strip()] = float(number)
    return out


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        values = _values(args.value)
        profiles = [load_profile(p) for p in args.profile]
    except (ValueError, ProfileError) as exc:
        print(f"edge-fw simulate: error: {exc}", file=sys.stderr)
        return 2
    addresses = list(args.address or [])
    meters = []
    for i, profile in enumerate(profiles):
        address = addresses[i] if i < len(addresses) else profile.default_address
        meters.append(SimMeter(profile, address, make_source(args.scenario, values, args.seed + i)))
    if not os.path.exists(args.port):
        print(f"edge-fw simulate: error: {args.port}: no such port (start socat first)", file=sys.stderr)
        return 2
    sim = Simulator(args.port, meters, baud=args.baud, seed=args.seed, control_file=args.control)
    if args.fault:
        sim.set_fault(args.fault, args.fault_rate)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    sim.start()
    what = ", ".join(f"{m.profile.name}@{m.address}" for m in meters)
    source = "constant" if values is not None else args.scenario
    print(f"edge-fw simulate: serving {what} on {args.port} ({source})", file=sys.stderr, flush=True)
    try:
        done.wait(args.duration)
    except KeyboardInterrupt:
        pass
    sim.stop()
    print(f"edge-fw simulate: {sim.requests} requests, {sim.answered} answers, "
          f"{sim.faults_injected} faults injected", file=sys.stderr)
    return 0
