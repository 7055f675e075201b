"""The demo site against a real Mosquitto: the bureau gets status, telemetry, events and evidence,
and a broker that is down for 60 s in the middle of the run costs nothing.

"Nothing lost" is checked against the box's own records: every event and every minute of
telemetry the box archived, and every evidence bundle it wrote, must have reached the
bureau, and the outbox must be empty at the end.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from broker import Broker, Recorder

BASE = "edge/v1/demo-site/crane-1"


def archived(data_dir: Path, kind: str) -> list[dict]:
    db = sqlite3.connect(data_dir / "archive.sqlite")
    rows = db.execute("SELECT body FROM archive WHERE kind = ? ORDER BY time", (kind,)).fetchall()
    return [json.loads(zlib.decompress(body)) for (body,) in rows]


def _queued(outbox: Path) -> int:
    """Messages still waiting in the box's outbox (read beside the running agent: SQLite WAL)."""
    try:
        db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 1_000_000


@pytest.mark.slow
def test_demo_site_delivers_everything_across_a_60_s_broker_outage(mosquitto: Broker, tmp_path: Path):
    import shutil

    if not shutil.which("socat"):
        pytest.skip("socat is not installed")
    out = tmp_path / "demo"
    bureau = Recorder(mosquitto.port, f"{BASE}/#", client_id="demo-bureau").start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen([sys.executable, "-m", "edge_agent", "demo", "--quiet", "--out", str(out),
                             "--mqtt", f"127.0.0.1:{mosquitto.port}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Wait until the site runs and events flow, then take the broker away for 60 s.
        # (violations, not the announcements of their warnings, which come with them; and a few
        # telemetry blocks, so the run is long enough for the ten the checks below want)
        assert bureau.wait_for(lambda: len([e for e in bureau.payloads("event") if e.get("kind") != "announcement"])
                               >= 3 and len(bureau.payloads("telemetry")) >= 4, timeout=150), \
            "the demo produced no events"
        mosquitto.stop()
        time.sleep(60)
        mosquitto.start()
        # The box reconnects and drains its backlog while the site keeps running.
        outbox = out / "data" / "outbox.sqlite"
        deadline = time.monotonic() + 40
        time.sleep(5)
        while time.monotonic() < deadline and _queued(outbox) > 5:
            time.sleep(1)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            output, _ = demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            output, _ = demo.communicate()
    assert demo.returncode == 0, output[-3000:]
    time.sleep(2)
    bureau.stop()

    data = out / "data"
    # What is still in the outbox at exit is not lost: it goes at the next start.
    pending = [(k, t, p) for k, t, p in sqlite3.connect(data / "outbox.sqlite").execute(
        "SELECT kind, topic, payload FROM messages")]
    pending_json = [(k, json.loads(p)) for k, t, p in pending if t in ("event", "telemetry", "evidence")]
    got_events = {(e["key"], e["state"]) for e in bureau.payloads("event")} | {
        (b["key"], b["state"]) for k, b in pending_json if k == "event"}
    box_events = {(e["key"], e["state"]) for e in archived(data, "event")}
    assert box_events and box_events <= got_events, f"lost events: {sorted(box_events - got_events)[:5]}"

    got_telemetry = {t["end"] for t in bureau.payloads("telemetry")} | {
        b["end"] for k, b in pending_json if k == "telemetry"}
    box_telemetry = {t["end"] for t in archived(data, "telemetry")}
    assert len(box_telemetry) >= 10 and box_telemetry <= got_telemetry, \
        f"lost telemetry: {sorted(box_telemetry - got_telemetry)[:5]}"

    with bureau.lock:
        manifests = {json.loads(m.payload)["id"] for m in bureau.messages if m.topic == f"{BASE}/evidence"}
    manifests |= {b["id"] for k, b in pending_json if k == "evidence" and "id" in b}
    bundles = {p.name for p in (data / "evidence").iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert bundles and bundles <= manifests, f"evidence never sent: {sorted(bundles - manifests)[:5]}"

    statuses = bureau.payloads("status")
    assert any(s["state"] == "online" for s in statuses) and statuses[-1]["state"] == "offline"
    kinds = {e["kind"] for e in bureau.payloads("event")}
    assert {"noise_over_limit", "dust_over_limit", "night_work"} <= kinds

    assert len(pending) < 50, f"{len(pending)} messages still queued at exit: the backlog never drained"
