"""HJ 212 as it is spoken in the field: the platform side takes every well-framed packet whose
length and CRC are right, records each deviation as a warning, and still refuses a bad CRC or
a bad length; `--strict` (and the box itself) refuse the deviations."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from edge_agent.hj212.codec import (
    DecodeError,
    Packet,
    Reassembler,
    StreamDecoder,
    decode,
    encode,
    frame,
    qn_from_epoch_ms,
    split,
)
from edge_agent.hj212.server import Hj212Server

MN, PW = "690000D5800028F889221AC0", "123456"
WAIT = 10.0

# Conformance vectors with correct length and CRC for the deviations seen in other vendors'
# packets (a 13-digit millisecond-epoch QN, a 3-digit ST, no CP at all, an extra header field),
# and two that must stay refused (a bad CRC, a bad length). The field packets themselves are
# not in this repository: these were made once for this test, by writing the data segment by
# hand and framing it with `edge_agent.hj212.codec.frame` (length = UTF-8 bytes of the segment,
# CRC of HJ 212-2017 Appendix A, the same code the shared vectors check), then pasted here.
# BAD_CRC is EPOCH_QN with its CRC 1680 changed to 1681; BAD_LENGTH is ST3 with 0164 as 0165.
EPOCH_QN = (b"##0162QN=1696740660000;ST=39;CN=2051;PW=123456;MN=690000D5800028F889221AC0;Flag=5;"
            b"CP=&&DataTime=20231008125000;a34001-Avg=0.052,a34001-Flag=N;Leq-Data=58.3,Leq-Flag=N&&1680\r\n")
ST3 = (b"##0164QN=20231008125115215;ST=391;CN=2011;PW=123456;MN=690000D5800028F889221AC0;Flag=4;"
       b"CP=&&DataTime=20231008125115;a34001-Rtd=0.052,a34001-Flag=N;LA-Rtd=58.3,LA-Flag=N&&4380\r\n")
NO_CP = b"##0079QN=20231008125115215;ST=39;CN=2011;PW=123456;MN=690000D5800028F889221AC0;Flag=47D00\r\n"
EXTRA_FIELD = (b"##0137QN=20231008125115215;ST=39;CN=2011;PW=123456;MN=690000D5800028F889221AC0;Flag=4;"
               b"Ver=HJ212-2017;CP=&&DataTime=20231008125115;LA-Rtd=58.3&&6600\r\n")
BAD_CRC = (b"##0162QN=1696740660000;ST=39;CN=2051;PW=123456;MN=690000D5800028F889221AC0;Flag=5;"
           b"CP=&&DataTime=20231008125000;a34001-Avg=0.052,a34001-Flag=N;Leq-Data=58.3,Leq-Flag=N&&1681\r\n")
BAD_LENGTH = (b"##0165QN=20231008125115215;ST=391;CN=2011;PW=123456;MN=690000D5800028F889221AC0;Flag=4;"
              b"CP=&&DataTime=20231008125115;a34001-Rtd=0.052,a34001-Flag=N;LA-Rtd=58.3,LA-Flag=N&&4380\r\n")
DEVIANT = [EPOCH_QN, ST3, NO_CP, EXTRA_FIELD]


def test_the_vectors_are_what_they_claim() -> None:
    for raw in (*DEVIANT, BAD_CRC, BAD_LENGTH):
        assert raw.startswith(b"##") and raw.endswith(b"\r\n")
    assert frame(EPOCH_QN[6:-6]) == EPOCH_QN and frame(ST3[6:-6]) == ST3
    assert frame(NO_CP[6:-6]) == NO_CP and frame(EXTRA_FIELD[6:-6]) == EXTRA_FIELD
    assert BAD_CRC[:-6] == EPOCH_QN[:-6] and BAD_LENGTH[6:] == ST3[6:]


# --- the codec ---------------------------------------------------------------------------

def test_millisecond_epoch_qn_is_converted_with_a_warning() -> None:
    p = decode(EPOCH_QN, strict=False)
    # 1696740660000 ms = 2023-10-08 04:51:00.000 UTC = 12:51:00.000 in Beijing.
    assert (p.qn, p.qn_sent, p.wire_qn) == ("20231008125100000", "1696740660000", "1696740660000")
    assert (p.st, p.cn, p.pw, p.mn, p.flag) == ("39", "2051", PW, MN, 5)
    assert p.data_time == "20231008125000" and p.get("a34001-Avg") == "0.052" and p.get("Leq-Data") == "58.3"
    assert p.warning_codes == ("qn_epoch_ms",)
    assert "1696740660000" in p.warnings[0].text and "20231008125100000" in p.warnings[0].text
    assert decode(EPOCH_QN, strict=False, tz="UTC").qn == "20231008045100000"
    assert qn_from_epoch_ms(1696740660123, "Asia/Shanghai") == "20231008125100123"


def test_three_digit_st_is_kept_with_a_warning() -> None:
    p = decode(ST3, strict=False)
    assert (p.st, p.cn, p.qn, p.qn_sent) == ("391", "2011", "20231008125115215", None)
    assert p.get("a34001-Rtd") == "0.052" and p.get("LA-Rtd") == "58.3"
    assert p.warning_codes == ("st_3_digits",)


def test_missing_cp_is_empty_data_with_a_warning() -> None:
    p = decode(NO_CP, strict=False)
    assert (p.st, p.cn, p.mn, p.flag, p.cp) == ("39", "2011", MN, 4, ())
    assert p.warning_codes == ("cp_missing",)


def test_unknown_header_field_is_kept_with_a_warning() -> None:
    p = decode(EXTRA_FIELD, strict=False)
    assert p.extra == (("Ver", "HJ212-2017"),) and p.get("LA-Rtd") == "58.3"
    assert p.warning_codes == ("header_unknown",)


@pytest.mark.parametrize("raw", DEVIANT, ids=["epoch_qn", "st3", "no_cp", "extra_field"])
def test_strict_decoding_refuses_the_deviations(raw: bytes) -> None:
    with pytest.raises(DecodeError) as err:
        decode(raw)
    assert err.value.kind == "malformed"


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "tolerant"])
def test_bad_crc_and_bad_length_are_refused_in_both_modes(strict: bool) -> None:
    for raw, kind in ((BAD_CRC, "bad_crc"), (BAD_LENGTH, "bad_length")):
        with pytest.raises(DecodeError) as err:
            decode(raw, strict=strict)
        assert err.value.kind == kind


def test_conforming_packets_decode_the_same_in_both_modes() -> None:
    from test_hj212_codec import VECTORS

    for raw in VECTORS:
        assert decode(raw, strict=False) == decode(raw)
        assert decode(raw, strict=False).warnings == ()


@pytest.mark.parametrize(("segment", "code"), [
    (b"QN=1;ST=39;CN=2011;PW=1;MN=M;CP=&&&&", "qn_format"),
    (b"ST=39;CN=2011;PW=1;CP=&&&&", "header_missing"),
    (b"ST=39;CN=2011;PW=1;MN=M;CP=&&a&&", "cp_malformed"),
    (b"ST=39;CN=2011;PW=1;MN=M;CP=&&a=1", "cp_malformed"),
    (b"ST=39;CN=2011;PW=1;MN=M;CP=a=1", "cp_malformed"),
    (b"ST=39;CN=2011;PW=1;MN=M;Foo=1;CP=&&&&", "header_unknown"),
    (b"ST=39;CN=2011;PW=1;MN=M;FLAG=5;CP=&&&&", "header_case"),
    (b"ST=39;CN=2011;PW=1;MN=M;MN=N;CP=&&&&", "header_duplicate"),
    (b"ST=39;CN=2011;PW=1;MN=M;junk;CP=&&&&", "header_syntax"),
    (b"ST=39;CN=2011;PW=1;MN=M;PNUM=2;CP=&&&&", "split_format"),
    (b"ST=39;CN=2011;PW=1;MN=M;Flag=999;CP=&&&&", "flag_format"),
    (b"ST=3;CN=2011;PW=1;MN=M;CP=&&&&", "st_format"),
    (b"ST=39;CN=20111;PW=1;MN=M;CP=&&&&", "cn_format"),
    (b"ST=39;CN=2011;PW=1;MN=\xff;CP=&&&&", "not_utf8"),
])
def test_each_deviation_is_a_structured_warning(segment: bytes, code: str) -> None:
    raw = frame(segment)
    with pytest.raises(DecodeError):
        decode(raw)
    p = decode(raw, strict=False)
    assert code in p.warning_codes
    assert all(w.text for w in p.warnings)


def test_what_can_be_read_is_read() -> None:
    p = decode(frame(b"ST=39;CN=2011;PW=1;MN=M;FLAG=5;Ver=2;CP=&&DataTime=20240101000000;bad;a=1,b;c=2&&"),
               strict=False)
    assert p.flag == 5 and p.extra == (("Ver", "2"),)
    assert p.cp == ((("DataTime", "20240101000000"),), (("a", "1"),), (("c", "2"),))
    assert set(p.warning_codes) == {"header_case", "header_unknown", "cp_malformed"}
    # One warning per kind and packet, the repeats in its text.
    (cp_warning,) = [w for w in p.warnings if w.code == "cp_malformed"]
    assert "'bad'" in cp_warning.text and "'b'" in cp_warning.text


def test_gbk_text_is_read_with_a_warning() -> None:
    segment = "QN=20240101000000000;ST=39;CN=3020;PW=1;MN=M;Flag=4;CP=&&Info=工地扬尘&&".encode("gbk")
    p = decode(frame(segment), strict=False)
    assert p.get("Info") == "工地扬尘" and p.warning_codes == ("not_utf8",)


def test_split_packet_with_epoch_qn_reassembles_with_its_warning() -> None:
    items: list[tuple[tuple[str, str], ...]] = [(("DataTime", "20240101120000"),)]
    items += [((f"a{34000 + i}-Avg", f"{i}.123"), (f"a{34000 + i}-Flag", "N")) for i in range(60)]
    whole = Packet(qn="20240101120000123", st="39", cn="2051", pw=PW, mn=MN, flag=5, cp=tuple(items))
    parts = [encode(p) for p in split(whole)]
    assert len(parts) > 1
    # The same parts as a vendor that writes QN as a millisecond epoch would send them.
    vendor = [frame(raw[6:-6].replace(b"QN=20240101120000123", b"QN=1704081600123")) for raw in parts]
    dec, asm, got = StreamDecoder(strict=False), Reassembler(), []
    for d in dec.feed(b"".join(vendor)):
        assert d.packet is not None
        done = asm.add(d.packet)
        if done is not None:
            got.append(done)
    assert len(got) == 1
    assert got[0].cp == whole.cp and got[0].qn == "20240101120000123" and got[0].qn_sent == "1704081600123"
    assert got[0].warning_codes == ("qn_epoch_ms",)
    with pytest.raises(DecodeError):
        decode(vendor[0])


# --- the reference platform over TCP -------------------------------------------------------

def _read_frames(sock: socket.socket, n: int) -> list[bytes]:
    data = b""
    while data.count(b"\r\n") < n:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    return [frame + b"\r\n" for frame in data.split(b"\r\n")[:-1]]


def test_platform_takes_deviant_packets_counts_and_logs_their_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.hj212.server")
    with Hj212Server("127.0.0.1", 0) as srv, socket.create_connection(("127.0.0.1", srv.port), WAIT) as sock:
        sock.settimeout(WAIT)
        sock.sendall(b"".join([*DEVIANT, BAD_CRC, BAD_LENGTH, EPOCH_QN]))
        assert srv.wait_for(lambda s: len(s.received()) == 7, WAIT)
        assert [r.verdict for r in srv.received()] == ["ok", "ok", "ok", "ok", "bad_crc", "bad_length", "ok"]
        assert srv.warning_counts() == {"qn_epoch_ms": 2, "st_3_digits": 1, "cp_missing": 1, "header_unknown": 1}
        assert srv.error_counts() == {"bad_crc": 1, "bad_length": 1}
        assert [p.cn for p in srv.packets()] == ["2051", "2011", "2011", "2011", "2051"]
        # The answer (9014) echoes the QN as the box wrote it, so that the box can match it.
        reply, again = _read_frames(sock, 2)
        assert reply == again
        assert reply[6:].startswith(b"QN=1696740660000;ST=91;CN=9014;")
        answer = decode(reply, strict=False)
        assert (answer.cn, answer.qn_sent, answer.mn) == ("9014", "1696740660000", MN)
    logged = [r.getMessage() for r in caplog.records]
    assert any("accepted with warning qn_epoch_ms" in m and "1696740660000" in m for m in logged)
    assert any("accepted with warning st_3_digits" in m for m in logged)
    assert any("accepted with warning cp_missing" in m for m in logged)


def test_strict_platform_refuses_the_deviations() -> None:
    good = encode(Packet(qn="20240506120000001", st="39", cn="2051", pw=PW, mn=MN, flag=5,
                         cp=((("DataTime", "20240506120000"),),)))
    with Hj212Server("127.0.0.1", 0, strict=True) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), WAIT) as sock:
        sock.settimeout(WAIT)
        sock.sendall(b"".join([*DEVIANT, BAD_CRC, BAD_LENGTH, good]))
        assert srv.wait_for(lambda s: len(s.received()) == 7, WAIT)
        assert [r.verdict for r in srv.received()] == [
            "malformed", "malformed", "malformed", "malformed", "bad_crc", "bad_length", "ok"]
        assert srv.warning_counts() == {}
        assert srv.error_counts() == {"malformed": 4, "bad_crc": 1, "bad_length": 1}
        # Nothing was answered but the conforming packet (the epoch-QN one wanted an answer too).
        (reply,) = _read_frames(sock, 1)
        assert decode(reply).qn == "20240506120000001"


# --- `edge-agent hj212-server` --------------------------------------------------------------

@pytest.fixture
def cli_server(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "hj212-server", "--port", "0", *request.param],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline().decode()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _send_and_read(proc: subprocess.Popen[bytes], port: int, n: int) -> list[str]:
    assert proc.stdout is not None
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"".join([*DEVIANT, BAD_CRC, BAD_LENGTH]))
        lines = [proc.stdout.readline().decode() for _ in range(n)]
    return lines


@pytest.mark.parametrize("cli_server", [[]], indirect=True, ids=["tolerant"])
def test_cli_prints_warnings_and_counts_them_by_kind(cli_server: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = cli_server
    lines = _send_and_read(proc, port, 6)
    assert [line.split()[2] for line in lines] == ["OK", "OK", "OK", "OK", "BAD_CRC", "BAD_LENGTH"]
    assert "[warn qn_epoch_ms]" in lines[0] and "QN=20231008125100000" in lines[0]
    assert "[warn st_3_digits]" in lines[1] and "[warn cp_missing]" in lines[2]
    assert "[warn header_unknown]" in lines[3]
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the counts by kind
    _out, err = proc.communicate(timeout=WAIT)
    summary = [line for line in err.decode().splitlines() if "by kind" in line]
    assert summary == ["hj212-server: packets taken with deviations, by kind: "
                       "cp_missing=1, header_unknown=1, qn_epoch_ms=1, st_3_digits=1"]


@pytest.mark.parametrize("cli_server", [["--strict"]], indirect=True, ids=["strict"])
def test_cli_strict_refuses_the_deviations(cli_server: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = cli_server
    lines = _send_and_read(proc, port, 6)
    assert [line.split()[2] for line in lines] == [
        "MALFORMED", "MALFORMED", "MALFORMED", "MALFORMED", "BAD_CRC", "BAD_LENGTH"]
    assert not any("[warn" in line for line in lines)


@pytest.mark.parametrize("how", ["sigint_ignored_by_parent", "sigterm"])
def test_cli_stops_with_its_summary_on_sigterm_and_when_its_parent_ignores_ctrl_c(how: str) -> None:
    """A script's background job inherits SIGINT ignored; systemd and `kill` send SIGTERM. Either way
    the server stops and prints its counts (a CI run launched in the background once hung here)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ignore_ctrl_c() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "hj212-server", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=ignore_ctrl_c if how == "sigint_ignored_by_parent" else None)
    try:
        assert proc.stderr is not None
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.stderr.readline().decode())
        assert match
        _send_and_read(proc, int(match.group(1)), 6)
        proc.send_signal(signal.SIGINT if how == "sigint_ignored_by_parent" else signal.SIGTERM)
        _out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0
        assert "by kind: cp_missing=1, header_unknown=1, qn_epoch_ms=1, st_3_digits=1" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
