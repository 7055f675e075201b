"""Modbus RTU meters on RS-485: profiles (YAML data), frame codec, one master per port, the bus poller."""

from drivers.modbus.codec import DataType, Order, decode_raw, encode_raw
from drivers.modbus.master import RtuMaster
from drivers.modbus.poller import BusPoller, BusSpec, MeterSpec
from drivers.modbus.port import open_port
from drivers.modbus.profile import (
    FieldSpec,
    Profile,
    ProfileError,
    ReadBlock,
    SettingRegister,
    bundled_profiles,
    load_profile,
    parse_profile,
)
from drivers.modbus.rtu import (
    CrcError,
    ExceptionReply,
    Garbage,
    ModbusError,
    PortError,
    Timeout,
    crc16,
    decode_response,
    read_request,
    write_request,
)

__all__ = [
    "BusPoller", "BusSpec", "CrcError", "DataType", "ExceptionReply", "FieldSpec", "Garbage", "MeterSpec",
    "ModbusError", "Order", "PortError", "Profile", "ProfileError", "ReadBlock", "RtuMaster",
    "SettingRegister", "Timeout", "bundled_profiles", "crc16", "decode_raw", "decode_response",
    "encode_raw", "load_profile", "open_port", "parse_profile", "read_request", "write_request",
]
