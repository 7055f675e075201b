"""`edge-fw scan`: find which addresses answer on a bus, and at which baud rate."""

from __future__ import annotations

import argparse
import sys

from drivers.modbus.profile import BAUD_RATES
from drivers.modbus.rtu import ExceptionReply, ModbusError, PortError
from firmware_tools.meter_io import Progress, ToolError, fail, open_master, profile_arg

NAME = "scan"
HELP = "find Modbus addresses and baud rates on an RS-485 bus"
DESCRIPTION = (
    "Sends one read request to every address at every candidate baud rate and lists who answers. "
    "An exception reply counts: the meter is there. Stop edge-agent first (one master per bus). "
    "DOMAIN note: probe 4800 and 9600; some meters answer at 0xFA (250) or 0xFF (255)."
)

DEFAULT_ADDRESSES = [*range(1, 248), 250, 255]


def _addresses(text: str | None) -> list[int]:
    if not text:
        return DEFAULT_ADDRESSES
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo, 0), int(hi or lo, 0)
        if not (1 <= a <= b <= 255):
            raise argparse.ArgumentTypeError(f"address range {part!r} outside 1..255")
        out.extend(range(a, b + 1))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("port", help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--baud", type=int, action="append", choices=BAUD_RATES, metavar="BAUD",
                        help="baud rate to try (repeatable; default: the profile's candidates, else 4800 and 9600)")
    parser.add_argument("--parity", choices=("N", "E", "O"), default="N", help="parity (default N)")
    parser.add_argument("--addresses", default=None, help="e.g. '1-10,250' (default 1-247, 250, 255)")
    parser.add_argument("--profile", help="probe the register of this profile's first field")
    parser.add_argument("--register", type=lambda s: int(s, 0), help="register to probe (default 0)")
    parser.add_argument("--function", type=int, choices=(3, 4), help="function code to probe (default 3)")
    parser.add_argument("--timeout", type=float, default=0.1, help="seconds to wait per address (default 0.1)")
    parser.add_argument("--all-bauds", action="store_true", help="keep scanning other bauds after a find")


def run(args: argparse.Namespace) -> int:
    try:
        addresses = _addresses(args.addresses)
        profile = profile_arg(args.profile) if args.profile else None
    except (ToolError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"edge-fw scan: error: {exc}", file=sys.stderr)
        return 2
    bauds = args.baud or (list(profile.baud_candidates) if profile else [4800, 9600])
    first = profile.fields[0] if profile else None
    register = args.register if args.register is not None else (first.register if first else 0)
    function = args.function or (first.function if first else 3)
    found: list[tuple[int, int, str]] = []
    bar = Progress(len(bauds) * len(addresses))
    try:
        for baud in bauds:
            try:
                master = open_master(args.port, baud, args.parity)
            except ToolError as exc:
                bar.close()
                return fail(NAME, exc)
            try:
                for address in addresses:
                    bar.update(note=f"{baud} baud, address {address}, found {len(found)}")
                    try:
                        words = master.read_registers(address, function, register, 1, args.timeout)
                        found.append((baud, address, f"register {register:#06x} = {words[0]}"))
                    except ExceptionReply as exc:
                        found.append((baud, address, f"answered with {exc}"))
                    except PortError as exc:
                        raise ToolError(str(exc)) from None
                    except ModbusError:
                        continue
            finally:
                master.close()
            if found and not args.all_bauds:
                bar.update(step=bar.total, note="done")
                break
    except ToolError as exc:
        bar.close()
        return fail(NAME, exc)
    bar.close()
    for baud, address, what in found:
        print(f"address {address} ({address:#04x}) at {baud} baud {args.parity}81: {what}")
    if not found:
        print(f"no meter answered on {args.port} at {', '.join(map(str, bauds))} baud", file=sys.stderr)
        return 1
    return 0
