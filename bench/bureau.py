"""The bureau console under a city's load: 300 simulated boxes into one real Mosquitto.

Every message is made by the agent's own encoders and signers (`bureau/simulate.py` wraps
`encode_json`, `Measure`/`Violation.to_json`, `EvidenceStore` and `publish_bundle`): per box a
retained status, 180 minutes of telemetry, violation events (started/ended) and two signed
evidence bundles with a watermarked snapshot.

1. The store is first filled with 7 days of minute telemetry for the same 300 boxes
   (3,024,000 rows, written through the store's own `apply`), plus events.
2. Ingest rate: the console subscribes once (persistent session) and stops; the fleet
   publishes everything (the broker keeps it); the console starts again and drains the
   backlog: messages / second from the first message received to the last one stored, all
   bundles verified. Target >= 3,000 msg/s on the 2-core machine.
3. Page times: p95 over 30 requests each of the fleet page (300 boxes) and a site page (two
   boxes, a day of minute telemetry as charts, the event timeline), logged in, through the real
   web server. Target <= 300 ms.

Run: .venv/bin/python bench/bureau.py   (needs mosquitto; about 3 minutes; ends with one JSON line)
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from broker import Broker
from paho.mqtt.enums import CallbackAPIVersion

from bureau.app import Console
from bureau.auth import hash_password
from bureau.config import BureauConfig
from bureau.messages import Event, Telemetry
from bureau.simulate import SimBox
from edge_agent.loopback import free_port

BOXES = 300
SITES = 150
DAYS = 7
LIVE_MINUTES = 180
TZ = ZoneInfo("Asia/Shanghai")


def ids(i: int) -> tuple[str, str]:
    return f"sz-site-{i // 2:04d}", f"crane-{i % 2 + 1}"


def prefill(console: Console, now: datetime) -> int:
    """7 days of minute telemetry per box, through the store's apply (as ingest would write it)."""
    rng = random.Random(1)
    end0 = now.replace(second=0, microsecond=0) - timedelta(minutes=LIVE_MINUTES)
    start = end0 - timedelta(days=DAYS)
    rows = 0
    for i in range(BOXES):
        site, device = ids(i)
        batch: list[Telemetry | Event] = []
        t = start
        n = 0
        while t < end0:
            t += timedelta(minutes=1)
            hour = t.astimezone(TZ).hour
            leq = (62 if 7 <= hour < 22 else 47) + rng.random() * 8
            batch.append(Telemetry(site, device, f"pre-{i}-{n}", t.timestamp(), round(leq, 1), round(leq + 10, 1),
                                   {"pm10": round(60 + rng.random() * 70, 1),
                                    "pm2_5": round(30 + rng.random() * 30, 1)},
                                   True, []))
            n += 1
        for d in range(DAYS):
            s = (start + timedelta(days=d, hours=10)).timestamp()
            for state, dt in (("started", 0), ("ended", 1500)):
                batch.append(Event(site, device, f"pre-ev-{i}-{d}-{state}", s + dt,
                                   f"noise_over_limit:noise-1:{int(s)}",
                                   "noise_over_limit", state, s, "noise-1", {"leq": 72.5, "limit": 70.0},
                                   "20 min LAeq 72.5 dB(A) over 70 dB(A)", True, {}))
        for k in range(0, len(batch), 20000):
            console.store.apply(batch[k:k + 20000], time.time())
        rows += n
    return rows


def fleet_messages(folder: Path, now: datetime) -> tuple[list[list[tuple[str, bytes, bool]]], int]:
    per_box = []
    bundles = 0
    for i in range(BOXES):
        site, device = ids(i)
        box = SimBox(site, device, folder / f"{site}-{device}")
        box.now = lambda: now
        msgs = [box.status()]
        base = now.replace(second=0, microsecond=0) - timedelta(minutes=LIVE_MINUTES)
        for m in range(LIVE_MINUTES):
            msgs.append(box.telemetry(base + timedelta(minutes=m + 1), 60.0 + (m % 10), 72.0, 80.0 + m % 30))
            if m in (40, 120):
                t0 = base + timedelta(minutes=m)
                v = box.violation("noise_over_limit", "started", t0, {"leq": 71.2, "limit": 70.0}, when=t0)
                _ev, files = box.bundle(v)
                bundles += 1
                msgs += [box.event(v), *files,
                         box.event(box.violation("noise_over_limit", "ended", t0, {"leq": 66.0, "limit": 70.0},
                                                 when=t0 + timedelta(minutes=20)))]
        per_box.append(msgs)
    return per_box, bundles


def publish_fleet(port: int, per_box: list[list[tuple[str, bytes, bool]]]) -> None:
    """Each box on its own connection, as in the field; 20 boxes at a time."""
    def one(msgs: list[tuple[str, bytes, bool]], n: int) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"box-{n}")
        c.max_inflight_messages_set(100)
        c.connect("127.0.0.1", port)
        c.loop_start()
        infos = [c.publish(t, p, qos=1, retain=r) for t, p, r in msgs]
        for info in infos:
            info.wait_for_publish(60)
        c.loop_stop()
        c.disconnect()

    for k in range(0, len(per_box), 20):
        threads = [threading.Thread(target=one, args=(m, k + j)) for j, m in enumerate(per_box[k:k + 20])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def p95(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def page_times(console: Console, day: str) -> dict[str, float]:
    import uvicorn

    from bureau.web.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(console), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    console.store.add_user("bench", "viewer", hash_password("bench-password"), time.time())
    token, _csrf = console.sessions.login("bench", "bench-password") or ("", "")
    cookie = {"Cookie": f"bureau_session={token}"}
    out = {}
    for name, path in (("fleet", "/"), ("site", f"/site/{ids(0)[0]}?day={day}")):
        times = []
        for n in range(33):
            t = time.perf_counter()
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=cookie)) as r:
                body = r.read()
                assert r.status == 200 and len(body) > 1000
            if n >= 3:  # the first few warm the caches
                times.append((time.perf_counter() - t) * 1000)
        out[name] = round(p95(times), 1)
    server.should_exit = True
    thread.join(5)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-bureau-"))
    (tmp / "broker").mkdir()
    broker = Broker(tmp / "broker").start()
    config = BureauConfig.model_validate({"mqtt": {"host": "127.0.0.1", "port": broker.port,
                                                   "client_id": "bench-bureau"},
                                          "store": {"data_dir": str(tmp / "bureau")}})
    now = datetime.now(timezone.utc)
    try:
        console = Console(config)
        console.start(connect_timeout=5)  # subscribe once: the broker keeps what comes while we are down
        console.stop()
        t = time.perf_counter()
        rows = prefill(console, now)
        prefill_s = time.perf_counter() - t
        per_box, bundles = fleet_messages(tmp / "boxes", now)
        total = sum(len(m) for m in per_box)
        t = time.perf_counter()
        publish_fleet(broker.port, per_box)
        publish_s = time.perf_counter() - t

        console = Console(config)
        first: list[float] = []
        orig = console.ingest._on_message

        def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
            if not first:
                first.append(time.perf_counter())
            orig(client, userdata, message)

        console.ingest._on_message = on_message  # type: ignore[method-assign]
        console.start(connect_timeout=5)
        deadline = time.monotonic() + 600
        stats = console.ingest.stats
        while stats.applied + stats.duplicates + stats.refused < total and time.monotonic() < deadline:
            time.sleep(0.01)
        done = time.perf_counter()
        ingest_s = done - (first[0] if first else done)
        verified_deadline = time.monotonic() + 120
        while time.monotonic() < verified_deadline:
            counts = console.store._db().execute(
                "SELECT verification, COUNT(*) FROM bundles GROUP BY verification").fetchall()
            by = {r[0]: r[1] for r in counts}
            if by.get("unverified", 0) + by.get("valid", 0) + by.get("failed", 0) >= bundles:
                break
            time.sleep(0.1)
        verify_s = time.perf_counter() - done
        stored_rows = console.store._db().execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
        pages = page_times(console, (now - timedelta(days=1)).astimezone(TZ).date().isoformat())
        console.stop()
        result = {
            "bench": "bureau", "boxes": BOXES, "messages": total, "bundles": bundles,
            "ingest_msg_s": round(stats.applied / ingest_s) if ingest_s > 0 else None,
            "ingest_target_msg_s": 3000, "applied": stats.applied, "refused": stats.refused,
            "bundles_checked": by, "verify_after_s": round(verify_s, 2),
            "telemetry_rows": stored_rows, "prefill_rows": rows, "prefill_s": round(prefill_s, 1),
            "publish_s": round(publish_s, 1),
            "fleet_page_p95_ms": pages["fleet"], "site_page_p95_ms": pages["site"], "page_target_ms": 300,
        }
        result["ok"] = bool(result["ingest_msg_s"] and result["ingest_msg_s"] >= 3000 and pages["fleet"] <= 300
                            and pages["site"] <= 300 and stats.applied == total)
        print(json.dumps(result))
    finally:
        broker.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
