"""HJ 212 uplink end to end on loopback: the real client, the reference platform, real TCP.

"Platform down for 10 minutes" is played fast: ten timestamped minute records are produced
while nothing listens, and must arrive afterwards with their original DataTime and QN.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drivers.types import Reading
from edge_agent.config.hj212 import Hj212Config
from edge_agent.hj212.client import Hj212Uplink
from edge_agent.hj212.codec import Packet, decode, encode
from edge_agent.hj212.server import Hj212Server
from edge_agent.types import Measure

MN, PW = "690000D5800028F889221AC0", "123456"
WAIT = 10.0  # generous ceiling for anything that should take well under a second


def _config(port: int, **kw: object) -> Hj212Config:
    base: dict[str, object] = dict(host="127.0.0.1", port=port, mn=MN, pw=PW, rtd_interval_s=1,
                                   ack_timeout_s=1, retries=1, connect_timeout_s=2,
                                   reconnect_min_s=0.05, reconnect_max_s=0.3)
    base.update(kw)
    return Hj212Config.model_validate(base)


@pytest.fixture
def server() -> Iterator[Hj212Server]:
    srv = Hj212Server("127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop()


def _uplink(port: int, tmp_path: Path, **kw: object) -> Hj212Uplink:
    clock = kw.pop("clock", None)
    cfg = _config(port, **kw)
    return Hj212Uplink(cfg, tmp_path, clock=clock, fsync=False) if clock else Hj212Uplink(cfg, tmp_path, fsync=False)


def _minute(end: datetime, tsp_ug: float, leq: float) -> list[Measure]:
    return [
        Measure("dust1", "tsp", 60, "avg", tsp_ug, "ug/m3", end, 60),
        Measure("dust1", "tsp", 60, "max", tsp_ug + 50, "ug/m3", end, 60),
        Measure("noise1", "noise_la", 60, "leq", leq, "dB(A)", end, 60),
        Measure("noise1", "noise_la", 60, "l90", leq - 8, "dB(A)", end, 60),
    ]


def _beijing(t: datetime) -> str:
    return (t + timedelta(hours=8)).strftime("%Y%m%d%H%M%S")


def _wait(pred, timeout: float = WAIT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


def test_realtime_and_minute_data_arrive(server: Hj212Server, tmp_path: Path) -> None:
    up = _uplink(server.port, tmp_path)
    now = datetime.now(timezone.utc)
    up.on_reading(Reading("dust1", "tsp", 123.0, "ug/m3", now))
    up.on_reading(Reading("noise1", "noise_la", 64.3, "dB(A)", now))
    up.start()
    try:
        end = datetime(2024, 5, 6, 2, 31, tzinfo=timezone.utc)
        qn = up.on_period(60, end, _minute(end, 210.0, 66.66))
        assert qn is not None
        assert server.wait_for(lambda s: len(s.packets("2011")) >= 2 and s.packets("2051"), WAIT)
        rtd = server.packets("2011")[0]
        assert (rtd.st, rtd.mn, rtd.pw, rtd.flag) == ("39", MN, PW, 4)
        assert rtd.get("a34001-Rtd") == "0.123" and rtd.get("LA-Rtd") == "64.3"
        assert rtd.get("a34001-Flag") == "N"
        minute = server.packets("2051")[0]
        assert minute.qn == qn and minute.flag == 5
        assert minute.data_time == _beijing(end - timedelta(minutes=1)) == "20240506103000"
        assert minute.get("a34001-Avg") == "0.210" and minute.get("a34001-Max") == "0.260"
        assert minute.get("Leq-Data") == "66.7" and minute.get("L90-Data") == "58.7"
        assert all(r.verdict == "ok" for r in server.received())
        assert _wait(lambda: up.health()["backlog"] == 0 and up.health()["acked"] == 1)
        assert up.health()["connected"] is True
    finally:
        up.stop()


def test_platform_down_ten_minutes_backlog_arrives_with_original_datatime(tmp_path: Path) -> None:
    srv = Hj212Server("127.0.0.1", 0)
    srv.start()
    port = srv.port
    up = _uplink(port, tmp_path, realtime=False)
    up.start()
    second: Hj212Server | None = None
    try:
        t0 = datetime(2024, 5, 6, 2, 0, tzinfo=timezone.utc)
        up.on_period(60, t0, _minute(t0, 100.0, 60.0))
        assert srv.wait_for(lambda s: len(s.packets("2051")) == 1, WAIT)
        assert _wait(lambda: up.health()["backlog"] == 0)

        srv.stop()  # the platform goes down; the box must notice and keep trying
        assert _wait(lambda: not up.health()["connected"])
        ends = [t0 + timedelta(minutes=i) for i in range(1, 11)]
        qns = [up.on_period(60, end, _minute(end, 100.0 + i, 60.0 + i)) for i, end in enumerate(ends, 1)]
        assert all(qns)
        assert _wait(lambda: up.health()["connect_failures"] >= 3)  # refused, retried with back-off
        assert up.health()["backlog"] == 10

        second = Hj212Server("127.0.0.1", port)  # the platform is back on the same port
        second.start()
        assert second.wait_for(lambda s: len(s.packets("2051")) == 10, WAIT)
        got = second.packets("2051")
        assert [p.data_time for p in got] == [_beijing(e - timedelta(minutes=1)) for e in ends]
        assert [p.qn for p in got] == qns
        assert [p.get("a34001-Avg") for p in got] == [f"{(100.0 + i) / 1000:.3f}" for i in range(1, 11)]
        assert all(r.verdict == "ok" for r in second.received())
        assert _wait(lambda: up.health()["backlog"] == 0)
        assert up.health()["connects"] >= 2
    finally:
        up.stop()
        srv.stop()
        if second is not None:
            second.stop()


def test_backlog_survives_a_restart_of_the_agent(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens here now: connection refused
    end = datetime(2024, 5, 6, 3, 0, tzinfo=timezone.utc)
    first = _uplink(port, tmp_path, realtime=False)
    first.start()
    qn = first.on_period(3600, end, [Measure("dust1", "tsp", 3600, "avg", 300.0, "ug/m3", end, 3600)])
    assert _wait(lambda: first.health()["connect_failures"] >= 1)
    first.stop()

    with Hj212Server("127.0.0.1", port) as srv:
        again = _uplink(port, tmp_path, realtime=False)
        assert again.health()["backlog"] == 1
        again.start()
        try:
            assert srv.wait_for(lambda s: len(s.packets("2061")) == 1, WAIT)
            hourly = srv.packets("2061")[0]
            assert hourly.qn == qn and hourly.data_time == "20240506100000"
            assert hourly.get("a34001-Avg") == "0.300"
            assert _wait(lambda: again.health()["backlog"] == 0)
        finally:
            again.stop()


def test_silent_platform_keeps_backlog_and_reconnects(tmp_path: Path) -> None:
    with Hj212Server("127.0.0.1", 0, answer_data=False) as srv:
        up = _uplink(srv.port, tmp_path, realtime=False, ack_timeout_s=0.2, retries=1)
        up.start()
        try:
            end = datetime(2024, 5, 6, 2, 1, tzinfo=timezone.utc)
            qn = up.on_period(60, end, _minute(end, 90.0, 55.0))
            # 1 send + 1 resend per connection, then a new connection: same QN and DataTime each time.
            assert srv.wait_for(lambda s: len(s.packets("2051")) >= 4, WAIT)
            assert {p.qn for p in srv.packets("2051")} == {qn}
            assert {p.data_time for p in srv.packets("2051")} == {"20240506100000"}
            h = up.health()
            assert h["backlog"] == 1 and h["acked"] == 0 and h["resent"] >= 1
            assert _wait(lambda: up.health()["connects"] >= 2)
            assert "no answer (9014)" in (up.health()["last_error"] or "")
        finally:
            up.stop()


def test_garbage_and_half_packets_from_platform(tmp_path: Path) -> None:
    with Hj212Server("127.0.0.1", 0, answer_data=False) as srv:
        up = _uplink(srv.port, tmp_path, realtime=False, ack_timeout_s=5)
        up.start()
        try:
            end = datetime(2024, 5, 6, 2, 2, tzinfo=timezone.utc)
            qn = up.on_period(60, end, _minute(end, 90.0, 55.0))
            assert srv.wait_for(lambda s: s.packets("2051"), WAIT)
            answer = encode(Packet(qn=qn, st="91", cn="9014", pw=PW, mn=MN, flag=4))
            bad_crc = answer[:-6] + b"%04X\r\n" % (int(answer[-6:-2], 16) ^ 0xFFFF)
            srv.send_raw(b"\x00\xffjunk##12" + b"\r\n" + bad_crc + answer[:20])  # garbage, bad CRC, half
            time.sleep(0.3)
            assert up.health()["backlog"] == 1
            srv.send_raw(answer[20:])  # the rest of the answer, in a later TCP segment
            assert _wait(lambda: up.health()["backlog"] == 0)
            errors = up.health()["decode_errors"]
            assert errors.get("garbage", 0) >= 1 and errors.get("bad_crc") == 1
            assert up.health()["connects"] == 1  # garbage did not cost the connection
        finally:
            up.stop()


def _answers(srv: Hj212Server, qn: str) -> list[Packet]:
    return [p for p in srv.packets() if p.qn == qn]


def test_platform_commands_are_answered(tmp_path: Path) -> None:
    fixed = datetime(2024, 5, 6, 4, 5, 6, tzinfo=timezone.utc)
    with Hj212Server("127.0.0.1", 0) as srv:
        up = _uplink(srv.port, tmp_path, realtime=False, clock=lambda: fixed)
        up.start()
        try:
            assert srv.wait_for(lambda s: s.clients(), WAIT)

            qn = srv.command("1011", [(("PolId", "w01018"),)], mn=MN, pw=PW)
            assert srv.wait_for(lambda s: len(_answers(s, qn)) == 3, WAIT)
            ready, data, done = _answers(srv, qn)
            assert (ready.cn, ready.st, ready.get("QnRtn")) == ("9011", "91", "1")
            assert (data.cn, data.get("PolId"), data.get("SystemTime")) == ("1011", "w01018", "20240506120506")
            assert (done.cn, done.get("ExeRtn")) == ("9012", "1")

            qn = srv.command("1062", [(("RtdInterval", "45"),)], mn=MN, pw=PW)
            assert srv.wait_for(lambda s: len(_answers(s, qn)) == 2, WAIT)
            assert [(p.cn, p.fields()) for p in _answers(srv, qn)] == [
                ("9011", {"QnRtn": "1"}), ("9012", {"ExeRtn": "1"})]
            assert up.health()["rtd_interval_s"] == 45

            qn = srv.command("1061", mn=MN, pw=PW)
            assert srv.wait_for(lambda s: len(_answers(s, qn)) == 3, WAIT)
            assert _answers(srv, qn)[1].get("RtdInterval") == "45"

            qn = srv.command("1012", [(("SystemTime", "20240506120000"),)], mn=MN, pw=PW)
            assert srv.wait_for(lambda s: _answers(s, qn), WAIT)
            assert [(p.cn, p.get("QnRtn")) for p in _answers(srv, qn)] == [("9011", "2")]  # refused by default

            qn = srv.command("1011", mn=MN, pw="999999")
            assert srv.wait_for(lambda s: _answers(s, qn), WAIT)
            assert [(p.cn, p.get("QnRtn")) for p in _answers(srv, qn)] == [("9011", "3")]

            raw = encode(Packet(qn="20240506120000999", st="39", cn="1061", pw=PW, mn=MN, flag=5))
            srv.send_raw(raw[:-6] + b"%04X\r\n" % (int(raw[-6:-2], 16) ^ 0xFFFF))  # a command with a bad CRC
            assert srv.wait_for(lambda s: _answers(s, "20240506120000999"), WAIT)
            assert [(p.cn, p.get("QnRtn")) for p in _answers(srv, "20240506120000999")] == [("9011", "9")]

            qn = srv.command("2012", mn=MN, pw=PW)  # stop real-time data (a notification)
            assert srv.wait_for(lambda s: _answers(s, qn), WAIT)
            assert [p.cn for p in _answers(srv, qn)] == ["9013"]
            assert up.health()["realtime"] is False
        finally:
            up.stop()


def test_config_section() -> None:
    from pydantic import ValidationError

    from edge_agent.config.root import AgentConfig

    cfg = AgentConfig.model_validate({"site": {"id": "s1"}, "device": {"id": "d1"},
                                      "hj212": {"host": "10.0.0.5", "port": 8888, "mn": MN}})
    assert cfg.hj212 is not None and cfg.hj212.st == "39" and cfg.hj212.dust_unit == "mg/m3"
    assert AgentConfig.model_validate({"site": {"id": "s1"}, "device": {"id": "d1"}}).hj212 is None
    for bad in ({"hots": "x"}, {"codes": ["a99999"]}, {"st": "3"}, {"dust_unit": "g/m3"}):
        with pytest.raises(ValidationError):
            Hj212Config.model_validate({"host": "h", "port": 1, "mn": MN, **bad})
    for name, field in Hj212Config.model_fields.items():
        assert field.description, name


def test_hj212_server_command_checks_and_logs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "hj212-server", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        banner = proc.stderr.readline().decode()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
        good = (b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
                b"CP=&&RtdInterval=30&&1C80\r\n")
        wants_answer = encode(Packet(qn="20240506120000001", st="39", cn="2051", pw=PW, mn=MN, flag=5,
                                     cp=((("DataTime", "20240506120000"),),)))
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(good + good[:-6] + b"1C81\r\n" + b"##9999" + good[6:] + wants_answer)
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += sock.recv(4096)
        assert decode(reply).cn == "9014" and decode(reply).qn == "20240506120000001"
        lines = [proc.stdout.readline().decode() for _ in range(4)]
        assert [line.split()[2] for line in lines] == ["OK", "BAD_CRC", "BAD_LENGTH", "OK"]
        assert "CN=1062" in lines[0]
    finally:
        proc.terminate()
        proc.wait(10)
