"""A full disk is a state: the link stays up, what is stored still leaves, status says `full`, then `ok`.

Everything here runs on a real filesystem that really fills (a tmpfs of a few MB, mounted for
the test: see small_fs.py) and, for the uplink, against a real Mosquitto. Seen before the fix:
SQLITE_FULL hidden behind "cannot rollback - no transaction is active", the error escaping
paho's on-connect callback, and the link dropped and remade 76 times in 75 s, each drop making
the broker publish the offline Will, while nothing stored was sent.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder, retained
from small_fs import fill, small_filesystem

from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.config.mqtt import MqttConfig
from edge_agent.outbox import _SCHEMA, Outbox, StorageFull, encode_json
from edge_agent.uplink.mqtt import MqttUplink
from edge_agent.uplink.topics import Topics

PAD = "x" * 10_000


def files_size(path: Path) -> int:
    """The outbox's database and WAL on disk."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def count_rows(path: Path) -> tuple[int, int]:
    """(rows, bytes) read by a second connection: what is really stored, not what the outbox believes."""
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) FROM messages").fetchone()
        return int(row[0]), int(row[1])
    finally:
        db.close()


def fill_outbox(box: Outbox, kind: str = "event", limit: int = 10_000) -> int:
    """Store numbered messages until the disk refuses one; returns how many were stored."""
    for n in range(limit):
        try:
            box.put(kind, {"seq": n, "pad": PAD}, kind=kind)
        except StorageFull:
            return n
    raise AssertionError("the disk never filled")


def test_put_on_a_full_disk_raises_storage_full_with_counts_kept(tmp_path: Path, caplog):
    with small_filesystem(tmp_path / "disk", 6 * 1024) as disk:
        caplog.set_level(logging.INFO, logger="edge_agent")
        box = Outbox(disk / "outbox.sqlite", 64 << 20)
        stored = fill_outbox(box)
        assert stored > 50
        for _ in range(5):  # each further try is refused cleanly, with the real reason
            with pytest.raises(StorageFull, match="disk full"):
                box.put("event", {"pad": PAD}, kind="event")
        assert box.depth() == stored and (box.depth(), box.bytes_used()) == count_rows(box.path)
        assert box.stats()["storage"] == "full"
        assert len([r for r in caplog.records if "disk full (" in r.getMessage()]) == 1  # once, not per put
        assert "no transaction is active" not in caplog.text

        fill(disk)  # and nothing else on the disk gives way either
        delivered = 0
        while box.depth():  # what is stored can still leave: acknowledged rows are deleted
            delivered += box.ack([m.row_id for m in box.pending(25)])
        assert delivered == stored and count_rows(box.path) == (0, 0)
        assert files_size(box.path) < 200_000  # the pages went back to the filesystem

        (disk / "filler.bin").unlink()
        assert box.stats()["storage"] == "ok"
        box.put("event", {"seq": "after"}, kind="event")
        assert box.depth() == 1 and box.reserve_path.stat().st_size == box.reserve_bytes
        box.close()


def test_a_full_disk_at_start_is_not_taken_for_a_corrupt_outbox(tmp_path: Path):
    """The old code called SQLITE_FULL at open "unreadable" and moved the file aside as corrupt."""
    with small_filesystem(tmp_path / "disk", 1024) as disk:
        fill(disk)
        with pytest.raises(StorageFull, match="disk full"):
            Outbox(disk / "outbox.sqlite", 64 << 20)
        assert not list(disk.glob("*.corrupt-*"))


def test_file_shrinks_as_the_queue_drains(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 4 << 20)
    for i in range(200):
        box.put("telemetry", {"n": i, "pad": "t" * 50_000}, kind="telemetry")
        assert box.bytes_used() <= 4 << 20
    assert files_size(box.path) < (4 << 20) + (2 << 20)  # the cap, plus at most the WAL and b-tree pages
    while box.depth():
        box.ack([m.row_id for m in box.pending(20)])
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert box.path.stat().st_size < 1_200_000  # what is left is the 1 MB of slack kept for the next burst
    assert box._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    box.close()


def test_an_old_outbox_file_is_switched_to_auto_vacuum_keeping_its_messages(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)  # as made by the previous version: auto_vacuum NONE
    for i in range(300):
        db.execute("INSERT INTO messages (msg_id, priority, kind, topic, payload, qos, retain, created) "
                   "VALUES (?, 1, 'event', 'event', ?, 1, 0, 0)", (f"m{i}", encode_json({"n": i}, f"m{i}")))
    db.execute("DELETE FROM messages WHERE rowid % 2 = 0")
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    db.close()
    box = Outbox(path, 10 << 20)
    assert box._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert box.depth() == 150 and [json.loads(m.payload)["n"] for m in box.pending(3)] == [0, 2, 4]
    box.close()


def wills(bureau: Recorder) -> list[dict]:
    return [p for p in bureau.payloads("status") if p.get("reason") == "connection lost"]


def wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_agent_on_a_full_disk_keeps_its_link_sends_what_it_stored_and_reports_full(mosquitto: Broker,
                                                                                    tmp_path: Path):
    with small_filesystem(tmp_path / "disk", 8 * 1024) as disk:
        config = load_config(write_config(tmp_path, mosquitto.port, storage={"data_dir": str(disk / "data")}))
        bureau = Recorder(mosquitto.port, f"{BASE}/#", client_id="full-bureau").start()
        mosquitto.stop()  # the link is down while the disk fills: everything waits in the outbox
        agent = Agent(config)
        agent.start()
        try:
            stored = [agent.publish("event", {"seq": n, "pad": PAD}, kind="event") for n in range(40)]
            fill(disk)  # clips, logs, whatever: the disk is full now
            with pytest.raises(StorageFull):
                for n in range(40, 1000):
                    agent.publish("event", {"seq": n, "pad": PAD}, kind="event")
            assert agent.outbox.stats()["storage"] == "full"
            depth = agent.outbox.depth()

            mosquitto.start()  # the on-connect "online" status cannot be stored: the link must stay up
            assert wait(lambda: agent.outbox.depth() == 0), f"{agent.outbox.depth()} of {depth} still queued"
            sent = {json.loads(m.payload)["seq"] for m in stored}
            assert wait(lambda: sent <= {p["seq"] for p in bureau.payloads("event")}, 10)  # all stored went out
            time.sleep(2)
            assert agent.uplink.health.connected and agent.uplink.health.connects == 1
            assert not wills(bureau)  # no "connection lost" at all

            # The "online" status refused at connection is stored again once the drain made room
            # for it (the disk is still full: the outbox's reserve is gone), and says so.
            assert wait(lambda: (raw := retained(mosquitto.port, f"{BASE}/status", 1)) is not None
                        and json.loads(raw)["state"] == "online" and json.loads(raw)["outbox"]["storage"] == "full",
                        15)

            (disk / "filler.bin").unlink()  # someone freed space
            assert agent.outbox.stats()["storage"] == "ok"
            agent.publish_status()
            agent.publish("event", {"seq": "after"}, kind="event")
            assert wait(lambda: any(p["seq"] == "after" for p in bureau.payloads("event")))
            assert wait(lambda: (raw := retained(mosquitto.port, f"{BASE}/status", 1)) is not None
                        and json.loads(raw)["outbox"]["storage"] == "ok", 10)
            assert agent.uplink.health.connects == 1 and not wills(bureau)
        finally:
            agent.stop(timeout=2)
            bureau.stop()


def test_an_on_connect_callback_that_cannot_store_does_not_drop_the_link(mosquitto: Broker, tmp_path: Path,
                                                                          caplog):
    """The callback itself raises StorageFull (a real one, from the full disk) on every connection."""
    with small_filesystem(tmp_path / "disk", 6 * 1024) as disk:
        box = Outbox(disk / "outbox.sqlite", 64 << 20)
        stored = fill_outbox(box)
        fill(disk)
        bureau = Recorder(mosquitto.port, f"{BASE}/#", client_id="full-bureau-2").start()

        def store_online() -> None:  # as the agent does on each connection; 300 kB never fits
            box.put("status", {"state": "online", "pad": "s" * 300_000}, kind="status", retain=True)

        uplink = MqttUplink(
            MqttConfig(port=mosquitto.port, reconnect_min_s=0.1, reconnect_max_s=0.2),
            Topics("edge/v1", "site-test", "box-1"), box,
            will=lambda msg_id: encode_json({"state": "offline", "reason": "connection lost"}, msg_id),
            on_connected=store_online)
        caplog.set_level(logging.INFO, logger="edge_agent")
        uplink.start()
        try:
            assert wait(lambda: box.depth() == 0), f"{box.depth()} of {stored} still queued"
            assert wait(lambda: len({p["seq"] for p in bureau.payloads("event")}) == stored, 10)
            time.sleep(6)  # past one retry of the refused on-connect status (every 5 s)
            assert uplink.health.connects == 1 and uplink.health.connected
            assert not wills(bureau)
            assert len([r for r in caplog.records if "the link stays up" in r.getMessage()]) == 1
        finally:
            uplink.stop(timeout=1)
            box.close()
            bureau.stop()


def test_telemetry_minutes_wait_in_memory_on_a_full_disk_and_are_stored_in_order(tmp_path: Path):
    """A minute that cannot be stored is held (bounded), not dropped; so is its on-site archive copy."""
    from datetime import datetime, timedelta, timezone

    from edge_agent.loopback import free_port

    with small_filesystem(tmp_path / "disk", 4096) as disk:
        agent = Agent(load_config(write_config(tmp_path, free_port(), storage={"data_dir": str(disk / "data")})))
        try:
            t1 = datetime(2026, 12, 1, 16, 1, tzinfo=timezone.utc)
            filler = fill(disk)
            with pytest.raises(StorageFull):
                agent.publish_telemetry(t1)
            filler.unlink()
            agent.publish_telemetry(t1 + timedelta(minutes=1))
            rows = sqlite3.connect(disk / "data" / "outbox.sqlite").execute(
                "SELECT payload FROM messages WHERE kind = 'telemetry' ORDER BY row_id").fetchall()
            ends = [json.loads(p)["end"] for (p,) in rows]
            assert ends == ["2026-12-02T00:01:00.000+08:00", "2026-12-02T00:02:00.000+08:00"]
            assert agent.archive.count("telemetry") == 2
        finally:
            agent.outbox.close()
            agent.archive.close()
