"""Fuzz the decoding path: whatever bytes come back, only a classified ModbusError escapes.

More than 10,000 responses: random byte strings, and mutations of valid answers (bit flips,
truncation, extension, wrong address or function, byte-count lies, valid CRC over wrong
content, noise around a good frame). Each one goes through `decode_response` and, when it
decodes, through every profile field's value decoder; each valid frame must give back the
exact words that were sent.
"""

from __future__ import annotations

import random

import pytest

from drivers.modbus import ModbusError, decode_response, load_profile, read_request, write_request
from drivers.modbus.codec import DataType, Order, decode_raw
from drivers.modbus.profile import FieldSpec, bundled_profiles
from drivers.modbus.rtu import crc16, exception_response, parse_request, read_response

SEED = 20240501
N_CASES = 12_000


def _valid(rng: random.Random, address: int, function: int, count: int) -> tuple[bytes, list[int]]:
    words = [rng.randrange(65536) for _ in range(count)]
    return read_response(address, function, words), words


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    op = rng.randrange(9)
    if op == 0:  # flip bits
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate
        del b[rng.randrange(len(b)):]
    elif op == 2:  # trailing junk
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
    elif op == 3:  # leading junk
        b[:0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
    elif op == 4:  # lie about the byte count, CRC made valid again
        b[2] = rng.randrange(256)
        b[-2:] = crc16(bytes(b[:-2]))
    elif op == 5:  # wrong address or function, CRC valid
        b[rng.randrange(2)] = rng.randrange(256)
        b[-2:] = crc16(bytes(b[:-2]))
    elif op == 6:  # odd length payload with a valid CRC
        body = bytes(b[:3]) + bytes(rng.randrange(256) for _ in range(rng.randint(0, 9)))
        b = bytearray(body + crc16(body))
    elif op == 7:  # exception frames, sometimes with random codes
        b = bytearray(exception_response(b[0], b[1] & 0x7F, rng.randrange(256)))
    else:  # duplicated frame
        b = b + b
    return bytes(b)


def _decode_fields(words: list[int], fields: list[FieldSpec]) -> None:
    for f in fields:
        if f.count <= len(words):
            f.value(words[: f.count])  # must not raise for any words


def test_fuzz_responses_never_escape_unclassified() -> None:
    rng = random.Random(SEED)
    fields = [f for name in bundled_profiles() for f in load_profile(name).fields]
    outcomes: dict[str, int] = {}
    exact = 0
    for case in range(N_CASES):
        address = rng.choice([1, 2, 4, 247, 250, 255])
        function = rng.choice([3, 4])
        count = rng.randint(1, 12)
        req = read_request(address, function, rng.randrange(0, 65536 - count), count)
        good, words = _valid(rng, address, function, count)
        kind = case % 4
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        elif kind == 3 and case % 8 == 3:
            data = good  # a share of intact frames: must decode exactly
        else:
            data = _mutate(rng, good)
        try:
            got = decode_response(req, data)
        except ModbusError as exc:
            outcomes[exc.kind] = outcomes.get(exc.kind, 0) + 1
            continue
        outcomes["ok"] = outcomes.get("ok", 0) + 1
        assert len(got) == count
        if data == good:
            assert got == words
            exact += 1
        _decode_fields(got, fields)
    assert sum(outcomes.values()) == N_CASES >= 10_000
    assert exact >= N_CASES // 10
    for kind in ("ok", "crc", "garbage", "timeout", "exception"):
        assert outcomes.get(kind, 0) > 0, outcomes


def test_fuzz_write_echo_and_request_parser() -> None:
    rng = random.Random(SEED + 1)
    for _ in range(3000):
        req = write_request(rng.randint(1, 247), rng.randrange(65536), rng.randrange(65536))
        echo = req.frame if rng.random() < 0.2 else _mutate(rng, req.frame)
        try:
            decode_response(req, echo)
        except ModbusError:
            pass
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 8, 8, 12])))
        parsed = parse_request(junk)  # the simulator's side: None or a tuple, never an exception
        assert parsed is None or len(parsed) == 4


@pytest.mark.parametrize("dtype", list(DataType))
def test_every_register_word_decodes_for_every_type(dtype: DataType) -> None:
    rng = random.Random(SEED + 2)
    for _ in range(2000):
        words = [rng.randrange(65536) for _ in range(dtype.registers)]
        for bo in Order:
            for wo in Order:
                v = decode_raw(words, dtype, bo, wo)
                assert isinstance(v, float)
