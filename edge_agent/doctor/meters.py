"""Doctor checks for RS-485 meters: each port opens, each meter answers with sensible values."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from drivers.modbus import ModbusError, PortError, RtuMaster, load_profile
from drivers.modbus.port import describe_open_error
from edge_agent.config import AgentConfig
from edge_agent.config.meters import MeterConfig
from edge_agent.doctor.checks import FAIL, PASS, WARN, Result


def check_meters(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    by_port: dict[str, list[MeterConfig]] = defaultdict(list)
    for meter in config.meters:
        if meter.enabled:
            by_port[meter.port].append(meter)
    for port, meters in by_port.items():
        first = meters[0]
        try:
            master = RtuMaster.open(port, first.baud, first.parity, first.stopbits, gap_s=first.gap_s)
        except (PortError, OSError, ValueError) as exc:
            detail = describe_open_error(port, exc) if isinstance(exc, OSError) else str(exc)
            for meter in meters:
                yield Result(f"meter {meter.id}", FAIL, f"port {port}: {detail}",
                             "check the USB-RS485 adapter is plugged in and meters[].port names it "
                             "(ls /dev/serial/by-id/); the agent's user needs the dialout group")
            continue
        try:
            for meter in meters:
                yield _ask(master, meter)
        finally:
            master.close()


def _ask(master: RtuMaster, meter: MeterConfig) -> Result:
    name = f"meter {meter.id}"
    profile = load_profile(meter.profile)
    values: list[str] = []
    odd: list[str] = []
    for block in profile.blocks():
        try:
            words = master.read_registers(meter.address, block.function, block.start, block.count, meter.timeout_s)
        except PortError as exc:
            return Result(name, FAIL, str(exc), "the adapter failed while in use: reseat the USB plug")
        except ModbusError as exc:
            hint = ("no answer: check A/B wiring, 12/24 V power, the address "
                    f"({meter.address}) and baud ({meter.baud}); `edge-fw scan {meter.port}` finds them")
            if exc.kind == "crc":
                hint = "answers arrive damaged: check the baud rate, wiring, termination and grounding"
            elif exc.kind == "exception":
                hint = f"the meter refuses the registers of profile {meter.profile}: is it the right profile?"
            return Result(name, FAIL, f"{exc.kind}: {exc}", hint)
        for f, w in block.split(words):
            v = f.value(w)
            values.append(f"{f.quantity}={v:g}{' ' + f.unit if f.unit else ''}")
            if not f.in_range(v):
                odd.append(f.quantity)
    detail = f"@{meter.address} on {meter.port}: " + ", ".join(values)
    if odd:
        return Result(name, WARN, detail + f" (out of range: {', '.join(odd)})",
                      "a value outside the meter's range: check the profile's scale and the sensor")
    return Result(name, PASS, detail)
