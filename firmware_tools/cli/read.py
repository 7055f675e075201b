"""`edge-fw read`: live values from one meter, decoded by its profile."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

from drivers.modbus.rtu import ModbusError, PortError
from firmware_tools.meter_io import ToolError, add_bus_arguments, fail, open_master, profile_arg

NAME = "read"
HELP = "show live values of one meter, decoded by its profile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bus_arguments(parser)
    parser.add_argument("--profile", required=True, help="profile name or YAML path")
    parser.add_argument("--address", type=int, help="Modbus address (default: the profile's)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reads (default 1)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many reads (default: until Ctrl-C)")
    parser.add_argument("--json", action="store_true", help="one JSON object per read")


def run(args: argparse.Namespace) -> int:
    try:
        profile = profile_arg(args.profile)
        address = args.address or profile.default_address
        master = open_master(args.port, args.baud or profile.default_baud, args.parity or profile.default_parity)
    except ToolError as exc:
        return fail(NAME, exc)
    n = 0
    try:
        while True:
            t0 = time.monotonic()
            values: dict[str, object] = {}
            problems: list[str] = []
            for block in profile.blocks():
                try:
                    words = master.read_registers(address, block.function, block.start, block.count, args.timeout)
                except PortError as exc:
                    raise ToolError(str(exc)) from None
                except ModbusError as exc:
                    problems.append(f"{exc.kind}: {exc}")
                    for f in block.fields:
                        values[f.quantity] = None
                    continue
                for f, w in block.split(words):
                    v = f.value(w)
                    values[f.quantity] = round(v, 4)
                    if not f.in_range(v):
                        problems.append(f"{f.quantity} out of range")
            stamp = datetime.now(timezone.utc).astimezone().strftime("%H:%M:%S")
            if args.json:
                print(json.dumps({"time": stamp, "address": address, "values": values, "problems": problems}),
                      flush=True)
            else:
                units = {f.quantity: f.unit for f in profile.fields}
                text = "  ".join(f"{q}={'-' if v is None else v}{units[q] and ' ' + units[q]}"
                                 for q, v in values.items())
                print(f"{stamp}  @{address}  {text}" + (f"  [{'; '.join(problems)}]" if problems else ""),
                      flush=True)
            n += 1
            if args.count and n >= args.count:
                return 0
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    except ToolError as exc:
        return fail(NAME, exc)
    except KeyboardInterrupt:
        return 0
    finally:
        master.close()
