"""City scale: ingest workers on an MQTT 5 shared subscription (real Mosquitto 2) into PostgreSQL
(a real cluster). A worker SIGKILLed mid-stream loses nothing; nothing is stored twice; every
evidence bundle, its pieces spread over workers, is complete and verified."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from broker import Broker
from bureau_helpers import box, make_store
from paho.mqtt.enums import CallbackAPIVersion
from pg import cluster

from bureau.fleet import backlog, make_boxes
from bureau.messages import parse
from bureau.store.postgres import PgStore, SchemaError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg_dsn() -> str:
    """A fresh, migrated database on this process's PostgreSQL cluster."""
    return cluster().fresh()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bureau", *args], capture_output=True, text=True, cwd=ROOT)


class Worker:
    """`edge-bureau ingest` as its own process; its stdout lines are collected."""

    def __init__(self, config: Path, worker_id: str, log: Path):
        self.log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "bureau", "ingest", "--config", str(config),
                                      "--worker-id", worker_id], stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, cwd=ROOT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.startswith("edge-bureau ingest: worker") for line in self.lines):
                return
            assert self.proc.poll() is None, f"worker exited: {self.proc.returncode}"
            time.sleep(0.05)
        raise TimeoutError("ingest worker not ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self._reader.join(5)
        self.log.close()
        return self.lines[-1] if self.lines else ""


def count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


def test_migrate_command_and_a_store_that_refuses_an_old_schema(tmp_path: Path):
    dsn = cluster().fresh(migrated=False)
    with pytest.raises(SchemaError, match="edge-bureau migrate"):
        make_store(tmp_path, dsn)
    cfg = tmp_path / "bureau.yaml"
    cfg.write_text(json.dumps({"store": {"kind": "postgres", "dsn": dsn, "data_dir": str(tmp_path / "d")}}))
    first = cli("migrate", "--config", str(cfg))
    assert first.returncode == 0, first.stderr
    assert "applied 0001_init.sql" in first.stdout
    again = cli("migrate", "--config", str(cfg))
    assert again.returncode == 0 and "already up to date" in again.stdout
    # Telemetry is partitioned by month: this month's partition exists.
    assert count(dsn, "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass") >= 17
    store, _ = make_store(tmp_path, dsn)
    store.close()


def test_two_stores_applying_the_same_messages_at_once_store_each_once(pg_dsn: str, tmp_path: Path):
    """Two workers handed the same batch (a redelivery) at the same moment: the unique key decides."""
    (a, _), (b, _) = make_store(tmp_path, pg_dsn), make_store(tmp_path, pg_dsn)
    boxes = make_boxes(4, tmp_path / "fleet")
    msgs = backlog(boxes, 20, violations=1, snapshot=False)
    records = [r for r in (parse(t, p, "edge/v1") for t, p, _ in msgs) if r is not None]
    # Each bundle's files to one store and its manifest to the other, everything else to both.
    results = []

    def run(store: PgStore, part: list) -> None:
        results.append(store.apply(part, time.time()))

    files_part = [r for r in records if type(r).__name__ == "EvidenceFile"]
    manifests = [r for r in records if type(r).__name__ == "Manifest"]
    json_part = [r for r in records if hasattr(r, "msg_id")]
    threads = [threading.Thread(target=run, args=(a, json_part + files_part)),
               threading.Thread(target=run, args=(b, json_part + manifests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r.applied for r in results) == len(json_part) + len(files_part) + len(manifests)
    assert sum(r.duplicates for r in results) == len(json_part)
    ready = {x for r in results for x in r.bundles_ready}
    assert len(ready) == len(manifests) == 4  # each bundle found complete by whichever stored its last piece
    assert count(pg_dsn, "SELECT COUNT(*) FROM event_updates") == sum(type(r).__name__ == "Event" for r in records)
    a.close()
    b.close()


def test_workers_share_the_stream_one_is_killed_and_nothing_is_lost_or_doubled(
        mosquitto: Broker, pg_dsn: str, tmp_path: Path):
    cfg = tmp_path / "bureau.yaml"
    cfg.write_text(json.dumps({
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "city"},
        "store": {"kind": "postgres", "dsn": pg_dsn, "data_dir": str(tmp_path / "data"),
                  "evidence_dir": str(tmp_path / "shared-evidence"), "pool_size": 4},
        # Slow batches: a worker always holds received, unacknowledged messages when it is killed.
        "ingest": {"shared_group": "city", "batch_ms": 400}}))
    boxes = make_boxes(10, tmp_path / "fleet")
    store, _ = make_store(tmp_path, pg_dsn)
    for b in boxes:
        store.register_key(b.site, b.device, b.signer.public_b64, b.signer.key_id, "admin", time.time())
    msgs = backlog(boxes, 45, violations=2)
    json_ids = {json.loads(p)["msg_id"] for t, p, _ in msgs if not t.split("/", 4)[-1].startswith("evidence")}
    n_files = sum(1 for t, _, _ in msgs if t.count("/") == 6)
    n_bundles = sum(1 for t, _, _ in msgs if t.endswith("/evidence"))
    assert len(json_ids) == 10 * (1 + 45) + 40 and n_bundles == 20

    w1 = Worker(cfg, "w1", tmp_path / "w1.log")
    w2 = Worker(cfg, "w2", tmp_path / "w2.log")
    w1.wait_ready()
    w2.wait_ready()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet", protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    infos = []
    w1b = None
    try:
        third = len(msgs) // 3
        for i, (t, p, r) in enumerate(msgs):
            infos.append(pub.publish(t, p, qos=1, retain=r))
            if i % 25 == 0:
                time.sleep(0.03)  # about 600 messages a second: a stream, not one burst
            if i == third:
                w1.proc.send_signal(signal.SIGKILL)
                w1.proc.wait(10)
            if i == 2 * third:
                w1b = Worker(cfg, "w1", tmp_path / "w1b.log")  # the same worker id: its session comes back
        for info in infos:
            info.wait_for_publish(10)
        assert w1b is not None
        w1b.wait_ready()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if (count(pg_dsn, "SELECT COUNT(*) FROM seen") >= len(json_ids)
                    and count(pg_dsn, "SELECT COUNT(*) FROM bundle_files") >= n_files
                    and count(pg_dsn, "SELECT COUNT(*) FROM bundles WHERE verification = 'valid'") >= n_bundles):
                break
            time.sleep(0.2)
    finally:
        pub.loop_stop()
        pub.disconnect()
        w2_last = w2.stop()
        w1b_last = w1b.stop() if w1b is not None else ""
        w1.stop()
    # Every message stored exactly once.
    with psycopg.connect(pg_dsn) as conn:
        seen = {r[0] for r in conn.execute("SELECT msg_id FROM seen")}
    assert seen == json_ids
    assert count(pg_dsn, "SELECT COUNT(*) FROM telemetry") == 10 * 45
    n_events = sum(1 for t, _, _ in msgs if t.endswith("/event"))
    assert count(pg_dsn, "SELECT COUNT(*) FROM event_updates") == n_events == 40
    assert count(pg_dsn, "SELECT COUNT(*) FROM events WHERE state = 'ended'") == 20
    assert count(pg_dsn, "SELECT COUNT(*) FROM bundle_files") == n_files
    # Every bundle complete, on the shared evidence path, verified with the registered keys, chained.
    fleet = store.fleet()
    assert len(fleet) == 10
    for dev in fleet:
        bundles = store.bundles(dev["site"], dev["device"])
        assert [(x["verification"], x["files_present"] == x["files_total"]) for x in bundles] == [("valid", True)] * 2
        assert sorted(x["chain"] for x in bundles) == ["first", "intact"]
    # Both workers took part (the restarted one included): "... N received, ..." on a clean stop.
    for last in (w2_last, w1b_last):
        assert "stopped:" in last and int(last.split("stopped: ")[1].split()[0]) > 0, last
    store.close()


def test_the_console_serves_from_a_postgres_store(pg_dsn: str, tmp_path: Path):
    """The web console opens whichever store the config names: its fleet page, logged in, from PostgreSQL."""
    import urllib.request

    import uvicorn

    from bureau.app import Console
    from bureau.auth import hash_password
    from bureau.config import BureauConfig
    from bureau.web.app import create_app
    from edge_agent.loopback import free_port

    config = BureauConfig.model_validate({"store": {"kind": "postgres", "dsn": pg_dsn,
                                                    "data_dir": str(tmp_path / "data")},
                                          "ingest": {"in_console": False}})
    store, _ = make_store(tmp_path, pg_dsn)
    b = box(tmp_path, device="crane-7")
    t, p, _r = b.status()
    rec = parse(t, p, "edge/v1")
    assert rec is not None
    store.apply([rec], time.time())
    console = Console(config)
    assert isinstance(console.store, PgStore) and not console.ingest.subscribe
    console.store.add_user("ops", "viewer", hash_password("a long enough password"), time.time())
    token, _csrf = console.sessions.login("ops", "a long enough password") or ("", "")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(console), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Cookie": f"bureau_session={token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            page = r.read().decode("utf-8")
        assert r.status == 200 and "crane-7" in page and b.site in page
    finally:
        server.should_exit = True
        thread.join(5)
        console.store.close()
        store.close()


def test_simulate_fleet_publishes_real_formats_with_outages(mosquitto: Broker, tmp_path: Path):
    got: list[tuple[str, bytes]] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload)))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("edge/v1/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    r = subprocess.run([sys.executable, "-m", "bureau", "simulate-fleet", "--boxes", "6", "--mqtt",
                        f"127.0.0.1:{mosquitto.port}", "--speed", "600", "--duration", "4",
                        "--outages-per-hour", "6", "--outage-s", "300", "--violations-per-hour", "3",
                        "--folder", str(tmp_path / "fleet")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    time.sleep(0.5)
    sub.loop_stop()
    sub.disconnect()
    assert r.returncode == 0, r.stderr
    records = [parse(t, p, "edge/v1") for t, p in got]
    kinds = {type(x).__name__ for x in records}
    assert {"Status", "Telemetry", "Event", "Manifest", "EvidenceFile"} <= kinds
    assert not [x for x in records if type(x).__name__ == "Refused"]
    wills = [x for x in records if type(x).__name__ == "Status" and x.body.get("reason") == "connection lost"]
    assert wills, "an outage should have made the broker publish a box's will"
    done = r.stdout.strip().splitlines()[-1]
    assert "reconnects" in done and " 0 outages" not in done
    assert len({(x.site, x.device) for x in records if x is not None}) == 6


def test_a_database_outage_stalls_ingest_and_loses_nothing(mosquitto: Broker, pg_dsn: str, tmp_path: Path):
    """While PostgreSQL is down nothing is acknowledged; when it is back, everything is stored."""
    from bureau.config import BureauConfig
    from bureau.ingest import Ingest
    from bureau.verify import Verifier

    config = BureauConfig.model_validate({
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "outage", "protocol": "5"},
        "store": {"kind": "postgres", "dsn": pg_dsn, "data_dir": str(tmp_path / "data")},
        "ingest": {"shared_group": "outage"}})
    store, files = make_store(tmp_path, pg_dsn)
    ingest = Ingest(config, store, Verifier(store, files))
    ingest.start(connect_timeout=5)
    assert ingest.subscribed.wait(5)
    b = box(tmp_path)
    msgs = backlog([b], 30)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outage-box", protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        for info in [pub.publish(t, p, qos=1) for t, p, _ in msgs[:11]]:
            info.wait_for_publish(5)
        deadline = time.monotonic() + 10
        while count(pg_dsn, "SELECT COUNT(*) FROM telemetry") < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster().pause()
        try:
            for info in [pub.publish(t, p, qos=1) for t, p, _ in msgs[11:]]:
                info.wait_for_publish(5)
            time.sleep(1.5)
            assert ingest.stats.last_error.startswith("store:")
        finally:
            cluster().resume()
        deadline = time.monotonic() + 20
        while count(pg_dsn, "SELECT COUNT(*) FROM telemetry") < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count(pg_dsn, "SELECT COUNT(*) FROM telemetry") == 30
        assert count(pg_dsn, "SELECT COUNT(*) FROM seen") == len(msgs)
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingest.stop()
        store.close()


def test_a_console_that_does_not_ingest_still_gets_its_live_feed(mosquitto: Broker, pg_dsn: str, tmp_path: Path):
    """`ingest.in_console: false`: workers store, the console's page listeners are told once it is stored."""
    import asyncio
    from datetime import datetime, timezone

    from bureau.app import Console
    from bureau.config import BureauConfig
    from bureau.ingest import Ingest
    from bureau.verify import Verifier

    base = {"mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "protocol": "5"},
            "store": {"kind": "postgres", "dsn": pg_dsn, "data_dir": str(tmp_path / "data")}}
    console = Console(BureauConfig.model_validate({**base, "ingest": {"in_console": False}}))
    worker_cfg = BureauConfig.model_validate({**base, "mqtt": {**base["mqtt"], "client_id": "live-worker"},
                                              "ingest": {"shared_group": "live"}})
    store, files = make_store(tmp_path, pg_dsn)
    worker = Ingest(worker_cfg, store, Verifier(store, files))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def listen() -> asyncio.Queue:
        return console.hub.subscribe()

    q = asyncio.run_coroutine_threadsafe(listen(), loop).result(5)
    console.start(connect_timeout=5)
    worker.start(connect_timeout=5)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="live-box", protocol=mqtt.MQTTv311)
    try:
        assert worker.subscribed.wait(5) and console.ingest.subscribed.wait(5)
        b = box(tmp_path)
        now = datetime.now(timezone.utc)
        topic, payload, _ = b.event(b.violation("noise_over_limit", "started", now, {"leq": 70.0, "limit": 55}))
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
        item = asyncio.run_coroutine_threadsafe(asyncio.wait_for(q.get(), 10), loop).result(12)
        assert item == {"type": "event"}
        assert [e["kind"] for e in console.store.events()] == ["noise_over_limit"]  # stored by the worker
        assert console.ingest.stats.received == 0  # the console itself stored nothing
    finally:
        pub.loop_stop()
        pub.disconnect()
        worker.stop()
        console.stop()
        console.store.close()
        store.close()
        loop.call_soon_threadsafe(loop.stop)
