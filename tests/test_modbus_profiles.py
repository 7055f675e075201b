"""Profiles, register decoding and the `meters:` config, pinned to literal frames from real code.

The frames below are facts copied from the shared dataset's frames.csv (Modbus RTU frames
found in public sensor code, with their sources listed there); our CRC
and our request builder must reproduce them byte for byte, and our decoder must read the
responses the way their sources say (0x0056 = 86 -> 8.6 m/s).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from drivers.modbus import ProfileError, decode_response, load_profile, parse_profile, read_request
from drivers.modbus.codec import DataType, Order, decode_raw, encode_raw
from drivers.modbus.profile import bundled_profiles
from drivers.modbus.rtu import CrcError, Garbage, Timeout, crc16, write_request
from edge_agent.config.loader import ConfigError, load_config
from edge_agent.config.meters import MeterConfig

LITERAL_FRAMES: list[dict[str, str]] = [
    {"frame_hex": "04 03 00 00 00 01 84 5F", "kind": "request",
     "meaning": "noise sensor (DeMei 'AllMonitor' edge device config: Noise, slave 4..."},
    {"frame_hex": "01 03 00 00 00 01 84 0A", "kind": "request",
     "meaning": "noise sensor read (Arduino sketch M1405: prints 'ระดับเสียง' = nois..."},
    {"frame_hex": "01 03 00 00 00 02 C4 0B", "kind": "request",
     "meaning": "decibel sensor read, 2 registers (Arduino sketch M1495, dB=(b3*256+..."},
    {"frame_hex": "01 03 00 00 00 01 84 0A", "kind": "request",
     "meaning": "wind-speed transmitter read (README example)"},
    {"frame_hex": "01 03 02 00 56 38 7A", "kind": "response",
     "meaning": "wind-speed transmitter response: 0x0056=86 -> 8.6 m/s (README example)"},
    {"frame_hex": "01 03 02 00 06 38 46", "kind": "response",
     "meaning": "generic holding-register read response captured in a device test lo..."},
    {"frame_hex": "01 03 02 00 07 F9 86", "kind": "response",
     "meaning": "generic response shown in a serial tool README (value 0x0007)"},
    {"frame_hex": "01 03 02 04 00 BA 84", "kind": "response",
     "meaning": "Arduino Modbus slave response (value 1024) from an RS485 DTU README"},
    {"frame_hex": "01 03 02 00 01 79 84", "kind": "response",
     "meaning": "response example in a Qt Modbus test tool (value 1)"},
    {"frame_hex": "FE 05 00 00 FF 00 98 35", "kind": "request",
     "meaning": "relay ON (FC05 coil 0, slave 0xFE) from the same DeMei edge-device log"},
    {"frame_hex": "FE 05 00 00 00 00 D9 C5", "kind": "request",
     "meaning": "relay OFF (FC05 coil 0, slave 0xFE)"},
    {"frame_hex": "FE 05 00 01 FF 00 C9 F5", "kind": "request",
     "meaning": "relay 2 ON"},
    {"frame_hex": "FE 05 00 01 00 00 88 05", "kind": "request",
     "meaning": "relay 2 OFF"},
]


def ref_crc(data: bytes) -> bytes:
    """CRC-16/MODBUS written out from DOMAIN.md §5: init 0xFFFF, poly 0xA001, low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])


def frames() -> list[dict[str, str]]:
    return LITERAL_FRAMES


def test_crc_of_every_literal_frame() -> None:
    rows = frames()
    assert len(rows) == 13
    for row in rows:
        frame = bytes.fromhex(row["frame_hex"])
        assert crc16(frame[:-2]) == frame[-2:], row["frame_hex"]
        assert ref_crc(frame[:-2]) == frame[-2:]


def test_crc_matches_reference_on_random_data() -> None:
    rng = random.Random(1)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        assert crc16(data) == ref_crc(data)


@pytest.mark.parametrize(
    ("address", "register", "count", "literal"),
    [
        (1, 0, 1, "01 03 00 00 00 01 84 0A"),  # Renke-style noise meter read (DOMAIN.md §5, M1405)
        (4, 0, 1, "04 03 00 00 00 01 84 5F"),  # DeMei edge device: Noise, slave 4
        (1, 0, 2, "01 03 00 00 00 02 C4 0B"),  # M1495 decibel sensor, 2 registers
    ],
)
def test_request_frames_match_literal_frames(address: int, register: int, count: int, literal: str) -> None:
    assert read_request(address, 3, register, count).frame == bytes.fromhex(literal)
    assert literal in {r["frame_hex"] for r in frames()}


def test_bundled_noise_profile_builds_the_literal_request() -> None:
    profile = load_profile("renke_rs_zs_n01")
    (block,) = profile.blocks()
    req = read_request(profile.default_address, block.function, block.start, block.count)
    assert req.frame == bytes.fromhex("01 03 00 00 00 01 84 0A")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("01 03 02 00 56 38 7A", 86),  # wind-speed transmitter: 8.6 m/s at 0.1 scale
        ("01 03 02 00 06 38 46", 6),
        ("01 03 02 00 07 F9 86", 7),
        ("01 03 02 04 00 BA 84", 1024),
        ("01 03 02 00 01 79 84", 1),
    ],
)
def test_literal_responses_decode(literal: str, value: int) -> None:
    assert literal in {r["frame_hex"] for r in frames()}
    req = read_request(1, 3, 0, 1)
    assert decode_response(req, bytes.fromhex(literal)) == [value]


def test_literal_wind_response_through_a_scaled_field() -> None:
    words = decode_response(read_request(1, 3, 0, 1), bytes.fromhex("01 03 02 00 56 38 7A"))
    profile = parse_profile({"name": "wind", "fields": [
        {"quantity": "wind_speed", "register": 0, "scale": 0.1, "unit": "m/s"}]})
    assert profile.fields[0].value(words) == 8.6


def test_fc05_relay_frames_are_not_mistaken_for_register_answers() -> None:
    relay_on = bytes.fromhex("FE 05 00 00 FF 00 98 35")
    req = read_request(0xFE, 3, 0, 1)
    with pytest.raises((Garbage, Timeout, CrcError)):
        decode_response(req, relay_on)


def test_write_request_is_fc06_with_crc() -> None:
    frame = write_request(1, 0x07D0, 5).frame
    assert frame[:6] == bytes.fromhex("01 06 07 D0 00 05") and frame[6:] == ref_crc(frame[:6])


# ----------------------------------------------------------------- data types

FLOAT_12_5 = 0x41480000  # 12.5 as IEEE-754 single


@pytest.mark.parametrize(
    ("words", "byte_order", "word_order"),
    [
        ([0x4148, 0x0000], Order.BIG, Order.BIG),  # ABCD
        ([0x0000, 0x4148], Order.BIG, Order.LITTLE),  # CDAB
        ([0x4841, 0x0000], Order.LITTLE, Order.BIG),  # BADC
        ([0x0000, 0x4841], Order.LITTLE, Order.LITTLE),  # DCBA
    ],
)
def test_float32_in_all_four_layouts(words: list[int], byte_order: Order, word_order: Order) -> None:
    assert struct.unpack(">f", FLOAT_12_5.to_bytes(4, "big"))[0] == 12.5
    assert decode_raw(words, DataType.FLOAT32, byte_order, word_order) == 12.5
    assert encode_raw(12.5, DataType.FLOAT32, byte_order, word_order) == words


def test_integer_types() -> None:
    assert decode_raw([0xFFFF], DataType.UINT16) == 65535
    assert decode_raw([0xFFFF], DataType.INT16) == -1
    assert decode_raw([0xFF85], DataType.INT16) == -123  # -12.3 °C at scale 0.1
    assert decode_raw([0x0001, 0x0002], DataType.UINT32) == 65538
    assert decode_raw([0x0002, 0x0001], DataType.UINT32, word_order=Order.LITTLE) == 65538
    assert decode_raw([0x0100], DataType.UINT16, byte_order=Order.LITTLE) == 1
    assert decode_raw([0xFFFF, 0xFFFE], DataType.INT32) == -2
    with pytest.raises(ValueError):
        decode_raw([1], DataType.UINT32)


def test_encode_decode_round_trip() -> None:
    rng = random.Random(2)
    for dtype in DataType:
        for _ in range(200):
            bo, wo = rng.choice(list(Order)), rng.choice(list(Order))
            if dtype is DataType.FLOAT32:
                x = struct.unpack(">f", struct.pack(">f", rng.uniform(-1e6, 1e6)))[0]
            else:
                bits = 16 * dtype.registers
                lo = -(1 << (bits - 1)) if dtype.value.startswith("int") else 0
                x = float(rng.randint(lo, lo + (1 << bits) - 1))
            assert decode_raw(encode_raw(x, dtype, bo, wo), dtype, bo, wo) == x


# ----------------------------------------------------------------- profiles

def test_bundled_profiles_load() -> None:
    assert {"renke_rs_zs_n01", "renke_rs_pm_n01", "generic_dust_monitor"} <= set(bundled_profiles())
    noise = load_profile("renke_rs_zs_n01")
    (f,) = noise.fields
    assert (f.quantity, f.function, f.register, f.dtype, f.scale, f.min, f.max) == (
        "noise_la", 3, 0, DataType.UINT16, 0.1, 30, 120)
    assert noise.default_baud == 4800 and set(noise.baud_candidates) == {4800, 9600}
    assert noise.address_register is not None and noise.baud_register is not None
    assert noise.baud_register.code_for(9600) == 2
    pm = load_profile("renke_rs_pm_n01")
    assert {f.quantity: f.register for f in pm.fields} == {"pm2_5": 4, "pm10": 9}
    (block,) = pm.blocks()  # one request 0x0004..0x0009, as the sample code reads it
    assert (block.start, block.count) == (4, 6)
    generic = load_profile("generic_dust_monitor")
    assert {"tsp", "pm10", "pm2_5", "noise_la"} <= {f.quantity for f in generic.fields}
    assert generic.address_register is None


def test_profile_by_path(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nfields:\n  - {quantity: tsp, register: 0x10, type: float32, word_order: little}\n")
    prof = load_profile(str(p))
    assert prof.fields[0].register == 16 and prof.fields[0].word_order is Order.LITTLE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "fields": [{"quantity": "a", "register": 0, "scael": 1}]}, "scael: unknown key"),
        ({"name": "x", "fields": [{"quantity": "a", "register": 0, "type": "int8"}]}, "int8"),
        ({"name": "x", "fields": [{"quantity": "a", "register": 0, "type": "uint32"},
                                  {"quantity": "b", "register": 1}]}, "overlaps"),
        ({"name": "x", "fields": [{"quantity": "a"}]}, "register"),
        ({"name": "x", "fields": [{"quantity": "a", "register": 0, "function": 6}]}, "function"),
        ({"name": "x", "fields": []}, "fields"),
        ({"name": "x", "fields": [{"quantity": "a", "register": 0}], "defaults": {"baud": 1234}}, "baud"),
        ({"name": "x", "fields": [{"quantity": "a", "register": 0, "scale": 0}]}, "scale"),
    ],
)
def test_bad_profiles_say_what_is_wrong(data: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile(data)


def test_unknown_profile_lists_the_bundled_ones() -> None:
    with pytest.raises(ProfileError, match="renke_rs_zs_n01"):
        load_profile("renke_rs_zs_n99")


# ----------------------------------------------------------------- meters: config

BASE = "site: {id: s1}\ndevice: {id: b1}\n"


def _load(tmp_path: Path, meters_yaml: str):
    f = tmp_path / "c.yaml"
    f.write_text(BASE + meters_yaml, encoding="utf-8")
    return load_config(f)


def test_meters_config_loads(tmp_path: Path) -> None:
    cfg = _load(tmp_path, (
        "meters:\n"
        "  - {id: noise1, port: /dev/ttyUSB0, baud: 4800, address: 1, profile: renke_rs_zs_n01}\n"
        "  - {id: dust1, port: /dev/ttyUSB0, baud: 4800, address: 2, profile: renke_rs_pm_n01,"
        " poll_interval_s: 5}\n"
    ))
    assert [m.id for m in cfg.meters] == ["noise1", "dust1"]
    assert cfg.meters[1].poll_interval_s == 5 and cfg.meters[0].parity == "N"


def test_no_meters_is_fine(tmp_path: Path) -> None:
    assert _load(tmp_path, "").meters == []


@pytest.mark.parametrize(
    ("meters_yaml", "message"),
    [
        ("  - {id: n1, port: /dev/ttyUSB0, profile: nope}\n", "unknown meter profile 'nope'"),
        ("  - {id: n1, port: /dev/ttyUSB0, baud: 4800, profile: renke_rs_zs_n01}\n"
         "  - {id: n2, port: /dev/ttyUSB0, baud: 9600, address: 2, profile: renke_rs_zs_n01}\n", "share /dev/ttyUSB0"),
        ("  - {id: n1, port: /dev/ttyUSB0, parity: E, profile: renke_rs_zs_n01}\n"
         "  - {id: n2, port: /dev/ttyUSB0, address: 2, profile: renke_rs_zs_n01}\n", "line settings"),
        ("  - {id: n1, port: /dev/ttyUSB0, profile: renke_rs_zs_n01}\n"
         "  - {id: n2, port: /dev/ttyUSB0, profile: renke_rs_zs_n01}\n", "both use address 1"),
        ("  - {id: n1, port: /dev/ttyUSB0, profile: renke_rs_zs_n01}\n"
         "  - {id: n1, port: /dev/ttyUSB1, profile: renke_rs_zs_n01}\n", "used twice"),
        ("  - {id: n1, port: /dev/ttyUSB0, baud: 4801, profile: renke_rs_zs_n01}\n", "baud must be one of"),
        ("  - {id: n1, port: /dev/ttyUSB0, profile: renke_rs_zs_n01, poll_intervall_s: 1}\n",
         "did you mean 'poll_interval_s'"),
    ],
)
def test_meters_config_errors(tmp_path: Path, meters_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "meters:\n" + meters_yaml)
    assert message in str(info.value), str(info.value)
    assert "c.yaml:" in str(info.value)


def test_different_ports_may_differ_in_baud(tmp_path: Path) -> None:
    cfg = _load(tmp_path, (
        "meters:\n"
        "  - {id: n1, port: /dev/ttyUSB0, baud: 4800, profile: renke_rs_zs_n01}\n"
        "  - {id: d1, port: /dev/ttyUSB1, baud: 9600, profile: renke_rs_pm_n01}\n"
    ))
    assert len(cfg.meters) == 2


def test_every_meter_field_is_described() -> None:
    for name, field in MeterConfig.model_fields.items():
        assert field.description, name
