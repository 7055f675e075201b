"""The bureau's store with real agent messages: de-duplication, life cycles, evidence and keys.

Every test runs on both stores: SQLite (one machine) and PostgreSQL (a city; a real cluster)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bureau_helpers import box, feed, make_store, verify_ready
from pg import cluster

from bureau.messages import Refused, parse
from bureau.store import FsEvidenceFiles
from bureau.store.sql import SqlStore
from bureau.verify import verify_one
from edge_agent.evidence.bundle import EvidenceFile
from edge_agent.evidence.publish import PART_BYTES

Make = Callable[[Path], tuple[SqlStore, FsEvidenceFiles]]


@pytest.fixture(params=["sqlite", "postgres"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """Opens the store under test in a temp dir (PostgreSQL: a fresh database); closes it after."""
    dsn = cluster().fresh() if request.param == "postgres" else None
    opened: list[SqlStore] = []

    def _make(tmp: Path) -> tuple[SqlStore, FsEvidenceFiles]:
        store, files = make_store(tmp, dsn)
        opened.append(store)
        return store, files

    yield _make
    for store in opened:
        store.close()


def test_duplicates_change_nothing_and_every_message_counts_once(tmp_path: Path, make: Make):
    store, _ = make(tmp_path)
    b = box(tmp_path)
    status = b.status()
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    tel = [b.telemetry(now - timedelta(minutes=i), 60 + i, 70 + i, 80) for i in range(3)]
    first = feed(store, [status, *tel])
    again = feed(store, [status, *tel, status])
    assert first.applied == 4 and first.duplicates == 0
    assert again.applied == 0 and again.duplicates == 5
    rows = store.telemetry(b.site, b.device, (now - timedelta(minutes=5)).timestamp(), now.timestamp() + 1)
    assert [r["leq"] for r in rows] == [62.0, 61.0, 60.0]
    fleet = store.fleet()
    assert [(d["site"], d["device"], d["state"], d["clock_sync"]) for d in fleet] == \
        [(b.site, b.device, "online", True)]
    assert fleet[0]["health"]["meters/noise-1"] == "ok"


def test_status_life_cycle_will_and_late_arrivals(tmp_path: Path, make: Make):
    store, _ = make(tmp_path)
    clock = [datetime.now(timezone.utc) - timedelta(hours=1)]
    b = box(tmp_path)
    b.now = lambda: clock[0]
    online = b.status()
    clock[0] += timedelta(minutes=30)
    will = b.status(will=True)  # the broker publishes it when the box is lost
    feed(store, [online])
    since_online = store.device(b.site, b.device)["since"]
    feed(store, [will])
    dev = store.device(b.site, b.device)
    assert dev["state"] == "offline" and dev["since"] > since_online
    clock[0] -= timedelta(minutes=50)
    feed(store, [b.status()])  # an older online status, late from a backlog: ignored
    assert store.device(b.site, b.device)["state"] == "offline"


def test_event_life_cycle_started_ongoing_ended(tmp_path: Path, make: Make):
    store, _ = make(tmp_path)
    b = box(tmp_path)
    t0 = datetime.now(timezone.utc) - timedelta(minutes=10)
    started = b.violation("noise_over_limit", "started", t0, {"leq": 66.2, "limit": 55}, when=t0)
    ongoing = b.violation("noise_over_limit", "ongoing", t0, {"leq": 68.0, "limit": 55},
                          when=t0 + timedelta(minutes=5))
    ended = b.violation("noise_over_limit", "ended", t0, {"leq": 52.0, "limit": 55}, when=t0 + timedelta(minutes=8))
    applied = feed(store, [b.event(started)])
    assert applied.events[0]["state"] == "started"
    assert store.fleet()[0]["open_violations"] == 1
    feed(store, [b.event(ended), b.event(ongoing)])  # out of order: ended stays ended
    [ev] = store.events()
    assert ev["state"] == "ended" and ev["ended"] is not None and ev["key"] == started.key
    assert [u["state"] for u in store.event_updates(ev["id"])] == ["started", "ongoing", "ended"]
    assert store.fleet()[0]["open_violations"] == 0


def test_evidence_reassembled_verified_with_registered_key_and_chain_gaps(tmp_path: Path, make: Make):
    store, files = make(tmp_path)
    b = box(tmp_path)
    t0 = datetime.now(timezone.utc)
    bundles = []
    for i in range(4):
        v = b.violation("noise_over_limit", "started", t0 + timedelta(seconds=i), {"leq": 60.0 + i, "limit": 55})
        bundles.append(b.bundle(v))
    # Files before the manifest (the box's order), bundle 3 never arrives: a gap.
    r1 = feed(store, bundles[0][1] + bundles[1][1] + bundles[3][1])
    assert verify_ready(store, files, r1) == {bundles[i][0].id: "unverified" for i in (0, 1, 3)}
    dev = store.device(b.site, b.device)
    assert dev["key_state"] == "pending" and dev["seen_key_id"] == b.signer.key_id
    assert store.chain_gaps(b.site, b.device) == [(3, 3)]
    # An admin approves the key seen (trust on first use): every bundle is checked again.
    assert store.approve_seen_key(b.site, b.device, "admin", 0) == b.signer.key_id
    again = {bb: verify_ready(store, files, type(r1)(bundles_ready=[(b.site, b.device, bb)]))[bb]
             for (_s, _d, bb) in store.bundles_to_verify()}
    assert set(again.values()) == {"valid"}
    chains = {x["seq"]: x["chain"] for x in store.bundles(b.site, b.device)}
    assert chains == {1: "first", 2: "intact", 4: "gap"}
    # The missing bundle arrives late: the gap closes and bundle 4's link is checked.
    r3 = feed(store, bundles[2][1])
    assert verify_ready(store, files, r3) == {bundles[2][0].id: "valid"}
    assert store.chain_gaps(b.site, b.device) == []
    assert {x["seq"]: x["chain"] for x in store.bundles(b.site, b.device)}[4] == "intact"
    got = store.bundle(b.site, b.device, bundles[0][0].id)
    assert got["verification"] == "valid" and all(f["matches"] for f in got["files"])
    assert got["manifest"]["violation"]["key"] == bundles[0][0].manifest["violation"]["key"]


def test_a_clip_in_parts_is_joined_whatever_the_order_and_a_wrong_part_fails(tmp_path: Path, make: Make):
    store, files = make(tmp_path)
    b = box(tmp_path)
    t0 = datetime.now(timezone.utc)
    clip = EvidenceFile("clip.mp4", os.urandom(3 * PART_BYTES // 2), "video/mp4")  # two parts
    ev, msgs = b.bundle(b.violation("black_smoke", "started", t0, {"grade": 3}), extra=(clip,))
    part_topics = [t for t, _, _ in msgs if "/clip.mp4/" in t]
    assert [t.rsplit("/", 2)[1:] for t in part_topics] == [["0", "2"], ["1", "2"]]
    manifest = [m for m in msgs if m[0].endswith("/evidence")]
    first, second = (m for m in msgs if "/clip.mp4/" in m[0])
    others = [m for m in msgs if m not in manifest and "/clip.mp4/" not in m[0]]
    # The second part, the manifest and the other files first (a reconnect's order), the second part again.
    r1 = feed(store, [second, *manifest, *others, second])
    assert r1.bundles_ready == []
    assert store.bundle(b.site, b.device, ev.id)["verification"] == "incomplete"
    r2 = feed(store, [first])
    assert verify_ready(store, files, r2) == {ev.id: "unverified"}  # complete; the key is not yet approved
    assert files.read(b.site, b.device, ev.id, "clip.mp4") == clip.data
    assert store.approve_seen_key(b.site, b.device, "admin", 0) == b.signer.key_id
    assert verify_one(store, files, b.site, b.device, ev.id) == "valid"
    files.remove_parts(b.site, b.device, ev.id)  # what Ingest does once the batch is committed
    assert not (tmp_path / "evidence" / b.site / b.device / ".parts" / ev.id).exists()

    # Another bundle whose second part was altered on the way: joined, checked, failed.
    ev2, msgs2 = b.bundle(b.violation("black_smoke", "started", t0 + timedelta(seconds=5), {"grade": 4}),
                          extra=(clip,))
    bad = [(t, (p[:-1] + bytes([p[-1] ^ 1])) if t.endswith("/clip.mp4/1/2") else p, r) for t, p, r in msgs2]
    assert verify_ready(store, files, feed(store, bad)) == {ev2.id: "failed"}


def test_tampered_file_and_forged_signature_fail_and_a_changed_key_is_flagged(tmp_path: Path, make: Make):
    store, files = make(tmp_path)
    b = box(tmp_path)
    store.register_key(b.site, b.device, b.signer.public_b64, b.signer.key_id, "admin", 0)
    v = b.violation("dust_over_limit", "started", datetime.now(timezone.utc), {"avg": 210.0, "limit": 150})
    ev, msgs = b.bundle(v)
    tampered = [(t, (p[:-10] + b"0123456789") if t.endswith("/readings.json") else p, r) for t, p, r in msgs]
    result = verify_ready(store, files, feed(store, tampered))
    assert result == {ev.id: "failed"}
    row = store.bundle(b.site, b.device, ev.id)
    assert any("readings.json" in p and "SHA-256" in p for p in row["problems"])
    assert [f["matches"] for f in row["files"] if f["name"] == "readings.json"] == [False]
    # The true file arrives again (a re-send): replaced, checked again, now valid.
    resend = [m for m in msgs if m[0].endswith("/readings.json")]
    assert verify_ready(store, files, feed(store, resend)) == {ev.id: "valid"}

    # The same box re-keyed (or an impostor): its bundles fail against the registered key, and the
    # device is flagged; nothing is trusted until an admin decides.
    import shutil

    shutil.rmtree(tmp_path / f"box-{b.site}-{b.device}" / "keys")
    impostor = box(tmp_path)
    assert impostor.signer.key_id != b.signer.key_id
    impostor.evidence = type(b.evidence)(tmp_path / "imp-ev", impostor.signer, b.site, b.device)
    v2 = impostor.violation("dust_over_limit", "started", datetime.now(timezone.utc), {"avg": 220.0})
    ev2, msgs2 = impostor.bundle(v2)
    assert verify_ready(store, files, feed(store, msgs2)) == {ev2.id: "failed"}
    dev = store.device(b.site, b.device)
    assert dev["key_state"] == "changed" and dev["key_id"] == b.signer.key_id
    assert dev["seen_key_id"] == impostor.signer.key_id
    assert any("expected key" in p for p in store.bundle(b.site, b.device, ev2.id)["problems"])


def test_bad_input_is_refused_and_kept_apart(tmp_path: Path, make: Make):
    store, _ = make(tmp_path)
    b = box(tmp_path)
    topic, payload, _ = b.status()
    body = json.loads(payload)
    forged = json.dumps({**body, "msg_id": "f" * 32, "device": "crane-9"}).encode()
    cases = {
        "forged": (topic, forged),
        "not json": (topic, b"{not json"),
        "list": (topic, b"[1,2]"),
        "bad state": (topic, json.dumps({**body, "msg_id": "e" * 32, "state": "great"}).encode()),
        "no msg id": (topic, json.dumps({k: v for k, v in body.items() if k != "msg_id"}).encode()),
        "oversize": (topic, b"{" + b" " * 300_000 + b"}"),
        "bad file name": (f"edge/v1/{b.site}/{b.device}/evidence/00000001-20261202T064057Z-caa4/..%2Fx", b"x"),
        "bad bundle id": (f"edge/v1/{b.site}/{b.device}/evidence/../etc/passwd", b"x"),
        "unknown leaf": (f"edge/v1/{b.site}/{b.device}/whatever", b"{}"),
        "bad site": ("edge/v1/../crane-1/status", payload),
    }
    records = {name: parse(t, p, "edge/v1") for name, (t, p) in cases.items()}
    for name, rec in records.items():
        assert isinstance(rec, Refused), name
    assert "forged" in records["forged"].reason and "oversize" in records["oversize"].reason
    applied = store.apply(list(records.values()), 0)
    assert applied.refused == len(cases) and applied.applied == 0
    assert store.fleet() == [] and len(store.refused()) == len(cases)
    assert not (tmp_path / "evidence" / b.site).exists()


def test_text_postgres_cannot_hold_is_kept_not_fatal(tmp_path: Path, make: Make):
    """A JSON string may carry U+0000, which PostgreSQL text refuses: the event is stored, the byte marked."""
    store, _ = make(tmp_path)
    b = box(tmp_path)
    t0 = datetime.now(timezone.utc)
    v = b.violation("noise_over_limit", "started", t0, {"leq": 66.0, "limit": 55}, message="超标\x00!", when=t0)
    applied = feed(store, [b.event(v)])
    assert applied.applied == 1
    [ev] = store.events()
    assert ev["message"] in ("超标\x00!", "超标\ufffd!")


def test_a_late_step_never_replaces_a_final_command_result(tmp_path: Path, make: Make):
    """Acks may overtake each other (a backlog, two workers): 'played' stays once it has arrived."""
    store, _ = make(tmp_path)
    b = box(tmp_path)
    now = datetime.now(timezone.utc)
    for cid in ("c-1", "c-2"):
        store.add_command({"id": cid, "site": b.site, "device": b.device, "name": "shout", "args": {},
                           "issued_at": now.timestamp(), "expires_at": now.timestamp() + 60}, "operator")

    def ack(cid: str, result: str):
        return b._json("cmd/ack", {"id": cid, "command": "shout", "result": result})

    feed(store, [ack("c-1", "played"), ack("c-1", "queued"), ack("c-1", "accepted")])
    feed(store, [ack("c-2", "queued"), ack("c-2", "accepted")])
    assert store.command("c-1")["state"] == "played"
    assert store.command("c-2")["state"] == "queued"
    feed(store, [ack("c-2", "failed")])
    assert store.command("c-2")["state"] == "failed"
