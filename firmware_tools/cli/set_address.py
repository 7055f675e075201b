"""`edge-fw set-address`: give a meter a new Modbus address (where its profile says how)."""

from __future__ import annotations

import argparse
import time

from drivers.modbus.rtu import ModbusError
from firmware_tools.meter_io import ToolError, add_bus_arguments, fail, open_master, profile_arg

NAME = "set-address"
HELP = "write a new Modbus address into a meter (profile must define address_register)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bus_arguments(parser)
    parser.add_argument("--profile", required=True, help="profile name or YAML path")
    parser.add_argument("--address", type=int, help="current address (default: the profile's)")
    parser.add_argument("--new", type=int, required=True, dest="new_address", help="new address, 1..247")


def run(args: argparse.Namespace) -> int:
    try:
        profile = profile_arg(args.profile)
        setting = profile.address_register
        if setting is None:
            raise ToolError(f"profile {profile.name} defines no address_register; set the address "
                            f"with the vendor's tool or DIP switches")
        if not 1 <= args.new_address <= 247:
            raise ToolError("new address must be 1..247")
        old = args.address or profile.default_address
        master = open_master(args.port, args.baud or profile.default_baud, args.parity or profile.default_parity)
    except ToolError as exc:
        return fail(NAME, exc)
    try:
        try:
            master.write_register(old, setting.register, setting.code_for(args.new_address), args.timeout)
        except ModbusError as exc:
            raise ToolError(f"meter at address {old} did not accept the write ({exc.kind}: {exc})") from None
        time.sleep(0.2)
        block = profile.blocks()[0]
        try:
            master.read_registers(args.new_address, block.function, block.start, block.count, args.timeout)
        except ModbusError as exc:
            print(f"written; the meter does not answer at {args.new_address} yet ({exc.kind}). "
                  f"Some meters switch only after a power cycle.")
            return 0
        print(f"meter now answers at address {args.new_address} (was {old})")
        return 0
    except ToolError as exc:
        return fail(NAME, exc)
    finally:
        master.close()
