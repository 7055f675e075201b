"""Mutated HJ 212 packets through the decoder: nothing but DecodeError escapes, and a bad
CRC or a bad length is reported as exactly that. Deterministic (fixed seed)."""

from __future__ import annotations

import random

import pytest
from test_hj212_codec import VECTORS  # the conformance vectors, written once

from edge_agent.hj212.codec import DecodeError, Packet, StreamDecoder, decode, encode, frame, split

SEED = 212_2017


def _corpus() -> list[bytes]:
    long = Packet(qn="20240101120000123", st="39", cn="2051", pw="123456", mn="MN0001", flag=5,
                  cp=((("DataTime", "20240101120000"),),
                      *(((f"a{34000 + i}-Avg", f"{i}.5"), (f"a{34000 + i}-Flag", "N")) for i in range(60))))
    parts = [encode(p) for p in split(long)]
    assert len(parts) > 1
    chinese = encode(Packet(qn="20240101120000124", st="39", cn="3020", pw="123456", mn="MN0001", flag=4,
                            cp=((("Info", "工地扬尘"),),)))
    return [*VECTORS, *parts, chinese]


CORPUS = _corpus()
N = 1000  # per mutation kind; 14 kinds → 14,000 packets


def _decode_kind(raw: bytes) -> str:
    """'ok' or the DecodeError kind; any other exception fails the test. What decodes must
    encode again and decode to the same packet."""
    try:
        packet = decode(raw)
    except DecodeError as exc:
        assert not exc.detail.startswith("unexpected"), exc  # a decoder bug caught by the safety net
        return exc.kind
    assert decode(encode(packet)) == packet
    return "ok"


def _segment_bounds(raw: bytes) -> tuple[int, int]:
    return 6, len(raw) - 6  # segment is raw[6:-6]


def _sub_segment_byte(rng: random.Random, raw: bytes) -> bytes:
    lo, hi = _segment_bounds(raw)
    i = rng.randrange(lo, hi)
    new = rng.choice([b for b in range(256) if b != raw[i]])
    return raw[:i] + bytes([new]) + raw[i + 1:]


def _sub_crc_char(rng: random.Random, raw: bytes) -> bytes:
    i = len(raw) - 6 + rng.randrange(4)
    old = chr(raw[i]).upper()
    new = rng.choice([b for b in range(256) if chr(b).upper() != old])
    return raw[:i] + bytes([new]) + raw[i + 1:]


def _insert_segment_byte(rng: random.Random, raw: bytes) -> bytes:
    lo, hi = _segment_bounds(raw)
    i = rng.randrange(lo, hi + 1)
    return raw[:i] + bytes([rng.randrange(256)]) + raw[i:]


def _delete_segment_byte(rng: random.Random, raw: bytes) -> bytes:
    lo, hi = _segment_bounds(raw)
    i = rng.randrange(lo, hi)
    return raw[:i] + raw[i + 1:]


def _change_length_digit(rng: random.Random, raw: bytes) -> bytes:
    i = 2 + rng.randrange(4)
    new = rng.choice([b for b in range(256) if b != raw[i]])
    return raw[:i] + bytes([new]) + raw[i + 1:]


@pytest.mark.parametrize(("mutate", "expected"), [
    (_sub_segment_byte, "bad_crc"),
    (_sub_crc_char, "bad_crc"),
    (_insert_segment_byte, "bad_length"),
    (_delete_segment_byte, "bad_length"),
    (_change_length_digit, "bad_length"),
])
def test_single_faults_are_reported_as_such(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(f"{SEED}-{mutate.__name__}")
    kinds = [_decode_kind(mutate(rng, rng.choice(CORPUS))) for _ in range(N)]
    assert kinds == [expected] * N


def _random_mutation(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del data[i:i + rng.randint(1, 8)]
        elif op == 3:
            data[i:i] = rng.choice([b"##", b"\r\n", b"&&", b";", b",", b"=", b"CP=&&", b"PNUM=2;PNO=3;", b"\xe5"])
        elif op == 4:
            data = data[:i]
        else:
            j = rng.randrange(len(data) + 1)
            data[i:j] = bytes(reversed(data[i:j]))
    return bytes(data)


def test_random_mutations_only_ever_raise_decode_error() -> None:
    rng = random.Random(SEED)
    kinds = {_decode_kind(_random_mutation(rng, rng.choice(CORPUS))) for _ in range(3 * N)}
    assert kinds <= {"ok", "bad_header", "bad_length", "bad_crc", "malformed"}
    assert {"bad_length", "bad_crc"} <= kinds


def test_reframed_mutated_segments_parse_or_are_malformed() -> None:
    """Mutate the data segment, then give it a right length and CRC: the parser itself is hit."""
    rng = random.Random(SEED + 1)
    kinds: dict[str, int] = {}
    for _ in range(3 * N):
        raw = rng.choice(CORPUS)
        segment = _random_mutation(rng, raw[6:-6]).replace(b"\r\n", b"")
        kind = _decode_kind(frame(segment))
        kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) <= {"ok", "malformed"}
    assert kinds.get("ok", 0) > 0 and kinds.get("malformed", 0) > 0


def test_stream_decoder_survives_mutated_streams_in_random_chunks() -> None:
    rng = random.Random(SEED + 2)
    good = 0
    for _ in range(3 * N // 10):
        dec = StreamDecoder(max_frame=3000)
        stream = b"".join(_random_mutation(rng, rng.choice(CORPUS)) if rng.random() < 0.7
                          else rng.choice(CORPUS) for _ in range(10))
        pos = 0
        while pos < len(stream):
            n = rng.randint(1, 64)
            for item in dec.feed(stream[pos:pos + n]):
                assert (item.packet is None) != (item.error is None)
                good += item.packet is not None
            pos += n
        assert dec.buffered <= 3000
    assert good > 0


# --- tolerant decoding (the platform side) -------------------------------------------------

def _tolerant_kind(raw: bytes) -> str:
    """'ok' or the DecodeError kind in tolerant mode; any other exception fails the test."""
    try:
        packet = decode(raw, strict=False)
    except DecodeError as exc:
        assert not exc.detail.startswith("unexpected"), exc
        return exc.kind
    assert all(w.code and w.text for w in packet.warnings)
    return "ok"


@pytest.mark.parametrize(("mutate", "expected"), [
    (_sub_segment_byte, "bad_crc"),
    (_sub_crc_char, "bad_crc"),
    (_insert_segment_byte, "bad_length"),
    (_delete_segment_byte, "bad_length"),
    (_change_length_digit, "bad_length"),
])
def test_tolerant_decoding_still_reports_single_faults_as_such(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(f"{SEED}-tolerant-{mutate.__name__}")
    kinds = [_tolerant_kind(mutate(rng, rng.choice(CORPUS))) for _ in range(N)]
    assert kinds == [expected] * N


def test_tolerant_decoding_takes_every_segment_with_right_length_and_crc() -> None:
    """Mutated data segments, reframed with a right length and CRC: all taken, none refused."""
    rng = random.Random(SEED + 3)
    warned = 0
    for _ in range(3 * N):
        raw = rng.choice(CORPUS)
        segment = _random_mutation(rng, raw[6:-6]).replace(b"\r\n", b"")
        framed = frame(segment)
        assert _tolerant_kind(framed) == "ok", framed
        warned += bool(decode(framed, strict=False).warnings)
    assert warned > N  # most mutations leave a trace


def test_tolerant_random_mutations_are_refused_only_for_framing_length_or_crc() -> None:
    rng = random.Random(SEED + 4)
    kinds = {_tolerant_kind(_random_mutation(rng, rng.choice(CORPUS))) for _ in range(3 * N)}
    assert kinds <= {"ok", "bad_header", "bad_length", "bad_crc"}
    assert {"bad_length", "bad_crc"} <= kinds
