"""The store-and-forward queue on its own: order, durability, the size cap and its drop policy."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox, OutboxFull


def test_priority_then_age(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    box.put("telemetry", {"n": 1}, kind="telemetry")
    box.put("event", {"n": 2}, kind="event")
    box.put("telemetry", {"n": 3}, kind="telemetry")
    box.put("evidence", {"n": 4}, kind="evidence")
    box.put("event", {"n": 5}, kind="event")
    order = [json.loads(m.payload)["n"] for m in box.pending(10)]
    assert order == [2, 5, 4, 1, 3]  # events, then evidence, then telemetry; oldest first in each


def test_every_json_payload_carries_its_stable_msg_id(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    stored = box.put("event", {"kind": "noise_over_limit"}, kind="event")
    again = box.pending(1)[0]
    assert json.loads(again.payload)["msg_id"] == stored.msg_id == again.msg_id


def test_survives_reopen_and_ack_removes(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    ids = [box.put("event", {"n": i}, kind="event").row_id for i in range(5)]
    box.close()
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    assert box.depth() == 5
    assert box.ack(ids[:3]) == 3
    assert [json.loads(m.payload)["n"] for m in box.pending(10)] == [3, 4]
    assert box.pending(10, exclude={ids[3]})[0].row_id == ids[4]


def test_newer_retained_status_supersedes_unsent_older(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    box.put("status", {"state": "online"}, kind="status", retain=True)
    box.put("status", {"state": "offline"}, kind="status", retain=True)
    assert [json.loads(m.payload)["state"] for m in box.pending(10)] == ["offline"]


def test_cap_drops_telemetry_first_and_reports_it(tmp_path: Path, caplog):
    box = Outbox(tmp_path / "o.sqlite", 20_000)
    for _ in range(10):
        box.put("evidence/x/a.jpg", b"e" * 1000, kind="evidence")
    for i in range(30):
        box.put("telemetry", b"t" * 500, kind="telemetry")
        assert box.bytes_used() <= 20_000, i
    kinds = box.depth_by_kind()
    assert kinds["evidence"] == 10  # no evidence lost while telemetry could make room
    assert box.dropped()["telemetry"]["count"] > 0
    assert box.stats()["dropped"]["telemetry"] == box.dropped()["telemetry"]["count"]


def test_evidence_is_dropped_only_when_nothing_else_is_left_and_loudly(tmp_path: Path, caplog):
    box = Outbox(tmp_path / "o.sqlite", 5_000)
    caplog.set_level(logging.WARNING)
    box.put("telemetry", b"t" * 100, kind="telemetry")
    for _ in range(6):
        box.put("evidence/x/a.jpg", b"e" * 1000, kind="evidence")
    assert "telemetry" not in box.depth_by_kind()
    assert box.dropped()["evidence"]["count"] >= 1
    assert any(r.levelno == logging.ERROR and "evidence" in r.getMessage() for r in caplog.records)


def test_message_bigger_than_cap_is_refused(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 1_000)
    with pytest.raises(OutboxFull):
        box.put("evidence/x/clip.mp4", b"x" * 2_000, kind="evidence")
    assert box.depth() == 0


def test_corrupt_file_is_moved_aside_not_fatal(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path, 1_000_000)
    box.put("event", {"n": 1}, kind="event")
    assert box.depth() == 1
    assert list(tmp_path.glob("o.sqlite.corrupt-*"))


def test_uses_wal_and_full_sync(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 1_000_000)
    box.put("event", {"n": 1}, kind="event")
    db = sqlite3.connect(tmp_path / "o.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_pending_respects_a_byte_budget_but_always_gives_one(tmp_path: Path):
    box = Outbox(tmp_path / "o.sqlite", 10_000_000)
    rows = [box.put(f"evidence/e/{i}.mp4", b"v" * 1000, kind="evidence").row_id for i in range(5)]
    assert [m.row_id for m in box.pending(10, max_bytes=2500)] == rows[:2]
    assert [m.row_id for m in box.pending(10, max_bytes=10)] == rows[:1]  # a big clip still goes, alone
    assert [m.row_id for m in box.pending(10, exclude={rows[0]}, max_bytes=2500)] == rows[1:3]
