"""A platform's request for past minute/hour/day data (CN 2051/2061/2031 with BeginTime and
EndTime), answered by the box from its on-site archive, over real TCP on loopback.

The archive is filled the way the daemon fills it: readings into the real MeasureEngine,
blocks closed by the real Figures, the minute telemetry stored by the real Agent
(`publish_telemetry`, kind `telemetry`) and the hourly/daily blocks by `Archive.add_block`
(the daemon's `archive` block consumer), in a real SQLite file.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from drivers.types import Reading
from edge_agent.app import Agent
from edge_agent.archive import BLOCK, TELEMETRY, Archive
from edge_agent.config.hj212 import Hj212Config
from edge_agent.config.root import AgentConfig
from edge_agent.hj212.client import Hj212Uplink
from edge_agent.hj212.codec import Packet, decode
from edge_agent.hj212.server import Hj212Server
from edge_agent.measures import MeasureEngine
from edge_agent.measures.figures import ClosedBlock, Figures
from edge_agent.types import Measure

MN, PW = "690000D5800028F889221AC0", "123456"
WAIT = 10.0
TZ = "Asia/Shanghai"
START = datetime(2024, 5, 6, 2, 0, tzinfo=timezone.utc)  # 10:00 in Beijing
MIN = timedelta(minutes=1)


def _tsp(i: int) -> float:  # µg/m³ throughout minute i (10:00 + i in Beijing)
    return 100.0 + 2 * i


def _la(i: int) -> float:  # dB(A) throughout minute i
    return 50.0 + 0.5 * i


class _NoRules:
    def evaluate(self, now: datetime, measures: list[Measure]) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One hour of measuring, 10:00-11:00 Beijing: a dust and a noise meter every 10 s, each
    minute at its own level; minute telemetry and hourly blocks archived as the daemon does."""
    data = tmp_path_factory.mktemp("site")
    cfg = AgentConfig.model_validate({"site": {"id": "s1", "timezone": TZ}, "device": {"id": "d1"},
                                      "storage": {"data_dir": str(data), "fsync": False}})
    agent = Agent(cfg)
    engine = MeasureEngine(TZ, night_windows=[], sample_period_s=10)
    figures = Figures(engine, _NoRules(), TZ, on_block=agent.archive.add_block,  # type: ignore[arg-type]
                      report=lambda v: None)
    agent.add_telemetry("figures", lambda end: figures.telemetry(end, 60))
    prev = START - timedelta(seconds=1)
    for i in range(60):
        t0 = START + i * MIN
        for k in range(6):
            engine.add(Reading("dust1", "tsp", _tsp(i), "ug/m3", t0 + timedelta(seconds=10 * k)))
            engine.add(Reading("noise1", "noise_la", _la(i), "dB(A)", t0 + timedelta(seconds=10 * k)))
        now = t0 + MIN + timedelta(seconds=1)
        figures.tick(prev, now)  # closes the minute (and at 11:00 the hour) block
        prev = now
        agent.publish_telemetry(t0 + MIN)
    yield agent
    agent.outbox.close()
    agent.archive.close()


def _uplink(port: int, tmp_path: Path, archive: Archive | None, **kw: object) -> Hj212Uplink:
    base: dict[str, object] = dict(host="127.0.0.1", port=port, mn=MN, pw=PW, realtime=False, ack_timeout_s=1,
                                   retries=1, connect_timeout_s=2, reconnect_min_s=0.05, reconnect_max_s=0.3)
    base.update(kw)
    return Hj212Uplink(Hj212Config.model_validate(base), tmp_path, fsync=False, archive=archive)


def _answers(srv: Hj212Server, qn: str) -> list[Packet]:
    return [p for p in srv.packets() if p.qn == qn]


def _finished(srv: Hj212Server, qn: str) -> bool:
    """The execution result (9012), or a refusal (9011 other than 1), has arrived."""
    return any(p.cn == "9012" or (p.cn == "9011" and p.get("QnRtn") != "1") for p in _answers(srv, qn))


def _wait_finished(srv: Hj212Server, qn: str) -> bool:
    return srv.wait_for(lambda s: _finished(s, qn), WAIT)


def _ask(srv: Hj212Server, cn: str, begin: datetime, end: datetime) -> list[Packet]:
    qn = srv.request_past_data(cn, begin, end, mn=MN, pw=PW)
    assert _wait_finished(srv, qn)
    return _answers(srv, qn)


def _archived_minute(archive: Archive, i: int) -> dict[tuple[str, str], Any]:
    """The figures archived for minute i, by (quantity, figure)."""
    end = START + (i + 1) * MIN
    ((when, body),) = archive.entries(TELEMETRY, end, end + timedelta(seconds=1))
    assert when == end and body["figures"] == "block"
    return {(m["quantity"], m["figure"]): m["value"] for m in body["measures"]}


@pytest.fixture
def platform(site: Agent, tmp_path: Path) -> Iterator[tuple[Hj212Server, Hj212Uplink]]:
    with Hj212Server("127.0.0.1", 0, tz=TZ) as srv:
        up = _uplink(srv.port, tmp_path, site.archive, timezone=TZ)
        up.start()
        try:
            assert srv.wait_for(lambda s: bool(s.clients()), WAIT)
            yield srv, up
        finally:
            up.stop()


def test_past_minute_data_is_answered_from_the_archive(site: Agent,
                                                        platform: tuple[Hj212Server, Hj212Uplink]) -> None:
    srv, up = platform
    ready, *data, done = _ask(srv, "2051", START + 5 * MIN, START + 7 * MIN)  # 10:05:00 .. 10:07:00
    assert (ready.cn, ready.st, ready.get("QnRtn")) == ("9011", "91", "1")
    assert (done.cn, done.st, done.get("ExeRtn")) == ("9012", "91", "1")
    assert [p.data_time for p in data] == ["20240506100500", "20240506100600", "20240506100700"]
    for i, p in zip((5, 6, 7), data, strict=True):
        assert (p.cn, p.st, p.mn, p.pw, p.flag, p.pnum) == ("2051", "39", MN, PW, 4, None)
        archived = _archived_minute(site.archive, i)
        assert archived[("tsp", "avg")] == _tsp(i)  # what was measured is what was archived ...
        assert archived[("noise_la", "leq")] == pytest.approx(_la(i), abs=1e-3)
        # ... and what was archived is what the platform gets (µg/m³ → mg/m³, 3 decimals).
        assert p.get("a34001-Avg") == f"{archived[('tsp', 'avg')] / 1000:.3f}" == f"{_tsp(i) / 1000:.3f}"
        assert p.get("a34001-Min") == p.get("a34001-Max") == p.get("a34001-Avg")
        assert p.get("Leq-Data") == f"{archived[('noise_la', 'leq')]:.1f}" == f"{_la(i):.1f}"
        assert p.get("L90-Data") == f"{_la(i):.1f}" and p.get("a34001-Flag") == p.get("Leq-Flag") == "N"
    assert all(r.verdict == "ok" and not r.warnings for r in srv.received())
    assert up.health()["past_data"] == {"requests": 1, "records_sent": 3}


def test_past_data_for_an_empty_range_says_no_data(platform: tuple[Hj212Server, Hj212Uplink]) -> None:
    srv, _up = platform
    answers = _ask(srv, "2051", START - timedelta(days=1), START - timedelta(days=1) + 30 * MIN)
    assert [(p.cn, p.fields()) for p in answers] == [("9011", {"QnRtn": "1"}), ("9012", {"ExeRtn": "100"})]
    # No day has ended since the archive began: no daily data either.
    answers = _ask(srv, "2031", START - timedelta(days=2), START + timedelta(days=1))
    assert [(p.cn, p.fields()) for p in answers] == [("9011", {"QnRtn": "1"}), ("9012", {"ExeRtn": "100"})]


def test_past_hourly_data_comes_from_the_archived_hour_blocks(site: Agent,
                                                               platform: tuple[Hj212Server, Hj212Uplink]) -> None:
    srv, _up = platform
    ready, *data, done = _ask(srv, "2061", START, START)  # the hour 10:00-11:00, DataTime 10:00
    assert (ready.get("QnRtn"), done.get("ExeRtn")) == ("1", "1")
    (hour,) = data
    ((_when, body),) = site.archive.entries(BLOCK, START + timedelta(hours=1),
                                            START + timedelta(hours=1, seconds=1))
    archived = {(m["quantity"], m["figure"]): m["value"] for m in body["measures"]}
    assert body["period_s"] == 3600 and archived[("tsp", "avg")] == pytest.approx(159.0)
    exact_leq = 10 * math.log10(sum(10 ** (_la(i) / 10) for i in range(60)) / 60)
    assert (hour.cn, hour.data_time) == ("2061", "20240506100000")
    assert hour.get("a34001-Avg") == "0.159" and hour.get("a34001-Min") == "0.100"
    assert hour.get("a34001-Max") == "0.218"
    assert hour.get("Leq-Data") == f"{archived[('noise_la', 'leq')]:.1f}"
    assert abs(float(hour.get("Leq-Data") or "nan") - exact_leq) <= 0.05 + 1e-9
    assert hour.get("LMx-Data") == "79.5" and hour.get("LMn-Data") == "50.0"


def test_long_records_are_split_with_pnum_and_pno(platform: tuple[Hj212Server, Hj212Uplink]) -> None:
    srv, up = platform
    whole = _ask(srv, "2051", START + 10 * MIN, START + 11 * MIN)[1:-1]
    up.max_segment = 220  # a record of two meters fits the standard's 1,024 bytes: force the split
    split = _ask(srv, "2051", START + 10 * MIN, START + 11 * MIN)[1:-1]
    assert [p.cp for p in split] == [p.cp for p in whole] and len(split) == 2
    parts = [r.packet for r in srv.received() if r.packet is not None and r.packet.pnum is not None]
    assert len(parts) >= 6 and all(p.cn == "2051" and p.flag == 4 | 2 for p in parts)
    assert all(len(r.raw) - 12 <= 220 for r in srv.received() if r.packet is not None and r.packet.pnum)
    assert all(p.data_time == whole[0].data_time for p in parts[:parts[0].pnum or 0])  # DataTime in each part


def test_request_times_are_in_the_platform_time_zone(site: Agent, tmp_path: Path) -> None:
    with Hj212Server("127.0.0.1", 0, tz="UTC") as srv:
        up = _uplink(srv.port, tmp_path, site.archive, timezone="UTC")
        up.start()
        try:
            assert srv.wait_for(lambda s: bool(s.clients()), WAIT)
            qn = srv.command("2051", [(("BeginTime", "20240506020500"),), (("EndTime", "20240506020500"),)],
                             mn=MN, pw=PW)
            assert _wait_finished(srv, qn)
            _ready, data, _done = _answers(srv, qn)
            assert data.data_time == "20240506020500" and data.get("a34001-Avg") == f"{_tsp(5) / 1000:.3f}"
        finally:
            up.stop()


def test_bad_requests_and_a_box_without_archive(platform: tuple[Hj212Server, Hj212Uplink], tmp_path: Path) -> None:
    srv, _up = platform
    for cp in ([(("BeginTime", "20240506100000"),)],  # no EndTime
               [(("BeginTime", "20240506100500"),), (("EndTime", "20240506100000"),)],  # backwards
               [(("BeginTime", "2024-05-06"),), (("EndTime", "20240506100000"),)]):
        qn = srv.command("2051", cp, mn=MN, pw=PW)
        assert _wait_finished(srv, qn)
        assert [(p.cn, p.fields()) for p in _answers(srv, qn)] == [
            ("9011", {"QnRtn": "1"}), ("9012", {"ExeRtn": "3"})]
    with Hj212Server("127.0.0.1", 0) as other:
        up = _uplink(other.port, tmp_path / "no-archive", None)
        up.start()
        try:
            assert other.wait_for(lambda s: bool(s.clients()), WAIT)
            answers = _ask(other, "2051", START, START + 5 * MIN)
            assert [(p.cn, p.fields()) for p in answers] == [("9011", {"QnRtn": "2"})]  # as before
        finally:
            up.stop()
    broken = Archive(tmp_path / "broken.sqlite")
    broken.close()  # an archive that cannot be read: the execution failed (ExeRtn=2)
    with Hj212Server("127.0.0.1", 0) as other:
        up = _uplink(other.port, tmp_path / "broken", broken)
        up.start()
        try:
            assert other.wait_for(lambda s: bool(s.clients()), WAIT)
            answers = _ask(other, "2051", START, START + 5 * MIN)
            assert [(p.cn, p.fields()) for p in answers] == [("9011", {"QnRtn": "1"}), ("9012", {"ExeRtn": "2"})]
            assert up.health()["connects"] == 1
        finally:
            up.stop()


def test_cli_asks_a_box_for_past_data(site: Agent, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "hj212-server", "--port", "0",
                             "--ask-past", "2051", "20240506100500", "20240506100600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    up: Hj212Uplink | None = None
    try:
        assert proc.stderr is not None and proc.stdout is not None
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.stderr.readline().decode())
        assert match
        up = _uplink(int(match.group(1)), tmp_path, site.archive)
        end = START + 2 * MIN
        up.on_period(60, end, [Measure("dust1", "tsp", 60, "avg", 90.0, "ug/m3", end, 6)])  # the box speaks
        up.start()
        lines: list[str] = []
        while not any("CN=9012" in line for line in lines):
            line = proc.stdout.readline().decode()
            assert line, "hj212-server stopped"
            lines.append(line)
        got = [decode(line.split()[-1].encode() + b"\r\n") for line in lines if "CN=2051" in line]
        assert [(p.data_time, p.get("a34001-Avg")) for p in got] == [
            ("20240506100100", "0.090"),  # the box's own minute record, then the two asked for
            ("20240506100500", f"{_tsp(5) / 1000:.3f}"), ("20240506100600", f"{_tsp(6) / 1000:.3f}")]
        assert "ExeRtn=1" in lines[-1]
    finally:
        if up is not None:
            up.stop()
        proc.kill()
        proc.wait(10)


def test_archive_keeps_hour_and_day_blocks_and_the_janitor_prunes_them_with_readings(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive.sqlite")
    try:
        end = START + timedelta(hours=1)
        m = Measure("dust1", "tsp", 3600, "avg", 150.0, "ug/m3", end, 360)
        archive.add_block(ClosedBlock(60, end, [m]))  # minute blocks live in the telemetry rows
        archive.add_block(ClosedBlock(3600, end, [m]))
        archive.add_block(ClosedBlock(86400, end, [m]))
        rows = list(archive.entries(BLOCK, START, end + timedelta(seconds=1)))
        assert [(when, body["period_s"]) for when, body in rows] == [(end, 3600), (end, 86400)]
        assert rows[0][1]["measures"] == [m.to_json()]
        archive.add(TELEMETRY, end, {"measures": []})
        from edge_agent.config.storage import StorageConfig
        from edge_agent.retention import Janitor

        days = (datetime.now(timezone.utc) - START).days + 2  # retention that ends after these rows
        Janitor(StorageConfig.model_validate({"data_dir": str(tmp_path), "disk_min_free_mb": 0,
                                              "retention": {"readings_days": days}}), archive).run_once()
        assert archive.count(BLOCK) == 2 and archive.count(TELEMETRY) == 1  # still inside their retention
        Janitor(StorageConfig.model_validate({"data_dir": str(tmp_path), "disk_min_free_mb": 0,
                                              "retention": {"readings_days": 1}}), archive).run_once()
        assert archive.count(BLOCK) == archive.count(TELEMETRY) == 0
    finally:
        archive.close()


def test_daemon_gives_the_uplink_the_archive_and_archives_blocks(tmp_path: Path) -> None:
    from edge_agent.daemon import build_agent
    from edge_agent.fanout import FanOut

    cfg = AgentConfig.model_validate({"site": {"id": "s1"}, "device": {"id": "d1"},
                                      "storage": {"data_dir": str(tmp_path), "fsync": False},
                                      "hj212": {"host": "127.0.0.1", "port": 1, "mn": MN}})
    parts = build_agent(cfg)
    try:
        assert isinstance(parts.hj212, Hj212Uplink) and parts.hj212._archive is parts.agent.archive
        on_block = parts.figures.on_block
        assert isinstance(on_block, FanOut)
        assert [name for name, _ in on_block.consumers] == ["archive", "hj212"]
    finally:
        assert isinstance(parts.hj212, Hj212Uplink)
        parts.hj212.outbox.close()
        parts.agent.outbox.close()
        parts.agent.archive.close()
