"""HJ 212-2017 codec: conformance vectors, CRC self-checks, flags, split/reassemble, mapping."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from drivers.types import Quality, Reading
from edge_agent.hj212.codec import (
    FLAG_ACK,
    FLAG_SPLIT,
    MAX_SEGMENT,
    DataFlag,
    DecodeError,
    EncodeError,
    Packet,
    Reassembler,
    StreamDecoder,
    crc16,
    decode,
    encode,
    encode_split,
    make_flag,
    reassemble,
    split,
)
from edge_agent.hj212.mapping import MappingOptions, data_time, period_cp, realtime_cp
from edge_agent.types import Measure

# Copied from shared/hj212_vectors.txt (HJ 212-2017 Appendix A; Lancer-Ming/factory;
# liruoyu2008/HJ212Interpreter): packets with correct length and CRC; CRLF added here.
VECTORS = [
    b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
    b"CP=&&RtdInterval=30&&1C80\r\n",
    b"##0239QN=20180821142509000;ST=39;CN=2011;PW=123456;MN=690000D5800028F889221AC0;Flag=4;"
    b"CP=&&DataTime=20180821142509;a34004-Rtd=0.0;a34002-Rtd=0.0;a34001-Rtd=0.0;LA-Rtd=0.0;"
    b"a01001-Rtd=0.0;a01002-Rtd=0.0;a01006-Rtd=0.0;a01007-Rtd=0.0;a01008-Rtd=0&&E541\r\n",
    b"##0094QN=20231008125115215;ST=22;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;"
    b"CP=&&QnRtn=1&&CC01\r\n",
]


@pytest.mark.parametrize("raw", VECTORS, ids=["1062", "2011", "9011"])
def test_vector_decodes_and_reencodes_byte_for_byte(raw: bytes) -> None:
    packet = decode(raw)
    assert encode(packet) == raw


def test_vector_fields() -> None:
    p = decode(VECTORS[0])
    assert (p.qn, p.st, p.cn, p.pw, p.mn, p.flag) == (
        "20160801085857223", "32", "1062", "100000", "010000A8900016F000169DC0", 5)
    assert p.get("RtdInterval") == "30"
    rt = decode(VECTORS[1])
    assert rt.data_time == "20180821142509"
    assert rt.get("a34001-Rtd") == "0.0" and rt.get("a01008-Rtd") == "0"
    assert decode(VECTORS[2]).get("QnRtn") == "1"


def test_crc_self_checks() -> None:
    assert crc16(b"") == 0xFFFF
    assert crc16(b"123456789") == 0x2F80


def test_crc_is_not_modbus() -> None:
    assert crc16(b"123456789") != 0x4B37  # CRC-16/MODBUS of the same bytes


def test_lower_case_crc_accepted() -> None:
    raw = VECTORS[0]
    lower = raw[:-6] + raw[-6:-2].lower() + b"\r\n"
    assert lower != raw
    assert decode(lower) == decode(raw)


def test_length_counts_utf8_bytes() -> None:
    p = Packet(qn="20240101000000000", st="39", cn="3020", pw="123456", mn="MN1", flag=4,
               cp=((("Info", "扬尘"),),))
    raw = encode(p)
    segment = raw[6:-6]
    assert int(raw[2:6]) == len(segment) == len(segment.decode("utf-8")) + 4  # 2 chars, 3 bytes each
    assert decode(raw) == p


def test_flag_bits() -> None:
    assert make_flag(ack=False) == 4
    assert make_flag(ack=True) == 5
    assert make_flag(ack=True, split=True) == 4 | FLAG_SPLIT | FLAG_ACK == 7
    p = decode(VECTORS[0])
    assert p.ack_wanted and p.version == 1 and not p.is_split
    assert not decode(VECTORS[1]).ack_wanted


def test_data_flags_are_the_standard_letters() -> None:
    assert {f.value for f in DataFlag} == set("NFMSDCTB")


def test_flags_with_values_keep_item_grouping() -> None:
    raw = encode(Packet(qn="20240101000000000", st="39", cn="2051", pw="123456", mn="MN1", flag=4,
                        cp=((("DataTime", "20240101000000"),),
                            (("a34001-Avg", "0.120"), ("a34001-Flag", "N")),
                            (("LA-Rtd", "61.2"), ("LA-Flag", "T")))))
    assert b"CP=&&DataTime=20240101000000;a34001-Avg=0.120,a34001-Flag=N;LA-Rtd=61.2,LA-Flag=T&&" in raw
    assert encode(decode(raw)) == raw


def _long_packet(n: int = 80) -> Packet:
    items = [(("DataTime", "20240101120000"),)]
    for i in range(n):
        items.append(((f"a{34000 + i}-Avg", f"{i}.123"), (f"a{34000 + i}-Min", "0.1"),
                      (f"a{34000 + i}-Max", "9.9"), (f"a{34000 + i}-Flag", "N")))
    return Packet(qn="20240101120000123", st="39", cn="2051", pw="123456", mn="690000D5800028F889221AC0",
                  flag=5, cp=tuple(items))


def test_long_packet_splits_and_reassembles() -> None:
    whole = _long_packet()
    assert len(encode(whole)) > MAX_SEGMENT
    parts = split(whole)
    assert len(parts) > 1
    raws = [encode(p) for p in parts]
    for i, raw in enumerate(raws, 1):
        assert int(raw[2:6]) <= MAX_SEGMENT
        p = decode(raw)
        assert (p.pnum, p.pno, p.qn) == (len(parts), i, whole.qn)
        assert p.flag is not None and p.flag & FLAG_SPLIT and p.ack_wanted
        assert p.data_time == "20240101120000"
        assert f";PNUM={len(parts)};PNO={i};CP=&&".encode() in raw
    assert reassemble([decode(r) for r in reversed(raws)]) == whole
    # The same through a stream that delivers it one byte at a time.
    dec, asm, got = StreamDecoder(), Reassembler(), []
    for b in b"".join(raws):
        for d in dec.feed(bytes([b])):
            assert d.packet is not None
            done = asm.add(d.packet)
            if done is not None:
                got.append(done)
    assert got == [whole]


def test_short_packet_is_not_split() -> None:
    p = decode(VECTORS[1])
    assert split(p) == [p]
    assert encode_split(p) == [VECTORS[1]]


def test_reassemble_incomplete_raises() -> None:
    parts = split(_long_packet())
    with pytest.raises(ValueError):
        reassemble(parts[:-1])


def test_item_longer_than_limit_cannot_split() -> None:
    p = Packet(qn="20240101000000000", st="39", cn="2051", pw="1", mn="M", flag=4,
               cp=((("Info", "x" * 2000),),))
    with pytest.raises(EncodeError):
        split(p)


def test_reserved_characters_refused_on_encode() -> None:
    with pytest.raises(EncodeError):
        encode(Packet(st="39", cn="2011", pw="1", mn="M", cp=((("a", "1;b=2"),),)))


@pytest.mark.parametrize(("raw", "kind"), [
    (VECTORS[0][:-6] + b"1C81\r\n", "bad_crc"),
    (VECTORS[0][:-6] + b"ZZZZ\r\n", "bad_crc"),
    (b"##0102" + VECTORS[0][6:], "bad_length"),
    (b"##01x1" + VECTORS[0][6:], "bad_length"),
    (VECTORS[0].replace(b"RtdInterval=30", b"RtdInterval=3"), "bad_length"),
    (b"$" + VECTORS[0][1:], "bad_header"),
    (VECTORS[0][:-2], "bad_header"),
    (b"", "bad_header"),
])
def test_decode_errors_say_what_is_wrong(raw: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(raw)
    assert err.value.kind == kind


def test_malformed_segment_with_good_crc() -> None:
    from edge_agent.hj212.codec import frame

    for segment in (b"QN=1;ST=39;CN=2011;PW=1;MN=M;CP=&&&&",  # QN not 17 digits
                    b"ST=39;CN=2011;PW=1;CP=&&&&",  # no MN
                    b"ST=39;CN=2011;PW=1;MN=M;CP=&&a&&",  # CP field without '='
                    b"ST=39;CN=2011;PW=1;MN=M;CP=&&a=1",  # CP not closed
                    b"ST=39;CN=2011;PW=1;MN=M;Foo=1;CP=&&&&",  # unknown header field
                    b"ST=39;CN=2011;PW=1;MN=M;PNUM=2;CP=&&&&",  # PNUM without PNO
                    b"ST=39;CN=2011;PW=1;MN=\xff;CP=&&&&"):  # not UTF-8
        with pytest.raises(DecodeError) as err:
            decode(frame(segment))
        assert err.value.kind == "malformed", segment


def test_stream_decoder_cuts_garbage_half_packets_and_bursts() -> None:
    dec = StreamDecoder()
    stream = b"noise\x00" + VECTORS[0] + VECTORS[1][:50]
    out = dec.feed(stream)
    assert [d.error.kind if d.error else d.packet.cn for d in out] == ["garbage", "1062"]  # type: ignore[union-attr]
    out = dec.feed(VECTORS[1][50:] + VECTORS[2][:-1])
    assert [d.packet.cn for d in out if d.packet] == ["2011"]
    out = dec.feed(b"\n")
    assert [d.packet.cn for d in out if d.packet] == ["9011"]
    assert dec.buffered == 0


def test_stream_decoder_bounds_memory() -> None:
    dec = StreamDecoder(max_frame=2000)
    out = dec.feed(b"##" + b"x" * 5000)
    assert [d.error.kind for d in out if d.error] == ["too_long"]
    assert dec.buffered == 0
    assert dec.feed(VECTORS[2])[0].packet is not None


# --- mapping ---------------------------------------------------------------------------

T = datetime(2024, 3, 1, 4, 0, tzinfo=timezone.utc)  # 12:00 in Beijing


def test_data_time_is_beijing_time() -> None:
    assert data_time(T, "Asia/Shanghai") == "20240301120000"


def test_realtime_cp_units_flags_and_order() -> None:
    readings = [
        Reading("m1", "noise_la", 61.24, "dB(A)", T),
        Reading("m2", "tsp", 125.0, "µg/m³", T),
        Reading("m2", "pm10", 80.0, "ug/m3", T, Quality.OUT_OF_RANGE),
        Reading("m3", "pressure", 1013.2, "hPa", T),
        Reading("m2", "pm2_5", None, "ug/m3", T, Quality.COMM_ERROR),
        Reading("m9", "unknown_thing", 1.0, "", T),
    ]
    cp = realtime_cp(readings, T, MappingOptions(dust_unit="mg/m3"))
    assert cp == (
        (("DataTime", "20240301120000"),),
        (("a34001-Rtd", "0.125"), ("a34001-Flag", "N")),
        (("a34002-Rtd", "0.080"), ("a34002-Flag", "T")),
        (("a34004-Flag", "B"),),
        (("LA-Rtd", "61.2"), ("LA-Flag", "N")),
        (("a01006-Rtd", "101.32"), ("a01006-Flag", "N")),
    )
    ug = realtime_cp(readings[1:2], T, MappingOptions(dust_unit="ug/m3", send_flags=False))
    assert ug[1] == (("a34001-Rtd", "125.0"),)
    only_la = realtime_cp(readings, T, MappingOptions(codes=frozenset({"LA"})))
    assert [item[0][0] for item in only_la] == ["DataTime", "LA-Rtd"]


def _m(quantity: str, figure: str, value: float | None, unit: str, window: int = 3600, **kw: object) -> Measure:
    return Measure("s1", quantity, window, figure, value, unit, T, samples=kw.pop("samples", 3600),  # type: ignore[arg-type]
                   **kw)  # type: ignore[arg-type]


def test_period_cp_dust_noise_and_day_figures() -> None:
    measures = [
        _m("tsp", "avg", 310.0, "ug/m3"), _m("tsp", "min", 100.0, "ug/m3"), _m("tsp", "max", 900.0, "ug/m3"),
        _m("noise_la", "leq", 65.15, "dB(A)"), _m("noise_la", "lmax", 80.0, "dB(A)"),
        _m("noise_la", "l90", 50.0, "dB(A)", valid=False, invalid=2000),
        _m("noise_la", "leq", 99.0, "dB(A)", window=1200),  # another window: not this block
        _m("noise_la", "ld", 66.0, "dB(A)", window=57600),
        _m("ringelmann", "max", 1.5, "grade"),
    ]
    cp = period_cp(measures, 3600, T, MappingOptions())
    assert cp == (
        (("DataTime", "20240301120000"),),
        (("a34001-Avg", "0.310"), ("a34001-Min", "0.100"), ("a34001-Max", "0.900"), ("a34001-Flag", "N")),
        (("Leq-Data", "65.2"), ("Leq-Flag", "N")),
        (("L90-Data", "50.0"), ("L90-Flag", "B")),
        (("LMx-Data", "80.0"), ("LMx-Flag", "N")),
        (("Ld-Data", "66.0"), ("Ld-Flag", "N")),
        (("a01010-Max", "1.5"), ("a01010-Flag", "N")),
    )
    avg = period_cp(measures[3:4], 3600, T, MappingOptions(noise_suffix="Avg", send_flags=False))
    assert avg[1] == (("Leq-Avg", "65.2"),)
    assert period_cp([], 3600, T, MappingOptions()) == ()
