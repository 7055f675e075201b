"""`edge-fw set-baud`: change a meter's baud rate (where its profile says how)."""

from __future__ import annotations

import argparse
import time

from drivers.modbus.profile import BAUD_RATES, ProfileError
from drivers.modbus.rtu import ModbusError, PortError
from firmware_tools.meter_io import ToolError, add_bus_arguments, fail, open_master, profile_arg

NAME = "set-baud"
HELP = "write a new baud rate into a meter (profile must define baud_register)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bus_arguments(parser, baud_help="current baud rate (default: the profile's)")
    parser.add_argument("--profile", required=True, help="profile name or YAML path")
    parser.add_argument("--address", type=int, help="meter address (default: the profile's)")
    parser.add_argument("--new", type=int, required=True, dest="new_baud", choices=BAUD_RATES,
                        metavar="BAUD", help="new baud rate")


def run(args: argparse.Namespace) -> int:
    try:
        profile = profile_arg(args.profile)
        setting = profile.baud_register
        if setting is None:
            raise ToolError(f"profile {profile.name} defines no baud_register")
        try:
            code = setting.code_for(args.new_baud)
        except ProfileError as exc:
            raise ToolError(str(exc)) from None
        address = args.address or profile.default_address
        parity = args.parity or profile.default_parity
        master = open_master(args.port, args.baud or profile.default_baud, parity)
    except ToolError as exc:
        return fail(NAME, exc)
    try:
        try:
            master.write_register(address, setting.register, code, args.timeout)
        except ModbusError as exc:
            raise ToolError(f"meter at address {address} did not accept the write ({exc.kind}: {exc})") from None
    except ToolError as exc:
        return fail(NAME, exc)
    finally:
        master.close()
    time.sleep(0.2)
    block = profile.blocks()[0]
    try:
        check = open_master(args.port, args.new_baud, parity)
    except ToolError as exc:
        return fail(NAME, exc)
    try:
        check.read_registers(address, block.function, block.start, block.count, args.timeout)
        print(f"meter at address {address} now answers at {args.new_baud} baud; "
              f"set baud: {args.new_baud} in the agent's config")
    except (ModbusError, PortError) as exc:
        print(f"written (code {code}); no answer at {args.new_baud} baud yet ({exc.kind}). "
              f"Most meters switch after a power cycle.")
    finally:
        check.close()
    return 0
