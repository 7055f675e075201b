"""City scale: 1, 2 and 4 `edge-bureau ingest` workers on PostgreSQL, 1,000 simulated boxes.

Every message is the agent's own (`bureau/fleet.py` over `SimBox`: `encode_json`, `Measure`,
`Violation`, signed `EvidenceStore` bundles with a watermarked snapshot): per box a status
and MINUTES (60) of telemetry, and for one box in ten a violation (started event, readings.json,
snapshot.jpg, manifest, ended event).

For each worker count: a fresh database (migrated), the workers join the shared subscription
`$share/bench/edge/v1/#` once and stop; the whole fleet's traffic is published while they are
away (Mosquitto keeps it in their persistent sessions, split between them); the workers start
again and drain it. Sustained msg/s = messages stored between the first and the last commit
seen by a poller. The CPU time of workers, Mosquitto and PostgreSQL over that window is read
from /proc, to say who takes the 2 cores. Then the web console on the same PostgreSQL store:
p95 of the fleet page (1,000 boxes) over 30 requests, logged in.

PostgreSQL runs with its durable defaults (fsync, synchronous_commit on), in a temp dir.
The real load of 1,000 boxes at their real rates is printed beside it (`real_rate_msg_s`).

Run: .venv/bin/python bench/bureau_scale.py   (needs mosquitto and postgresql; ~5 minutes; one JSON line)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from broker import Broker  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from pg import Cluster  # noqa: E402

from bureau.fleet import STATUS_S, TELEMETRY_S, backlog, make_boxes  # noqa: E402
from edge_agent.loopback import free_port  # noqa: E402

BOXES = 1000
MINUTES = 60
VIOLATING = BOXES // 10
WORKERS = (1, 2, 4)
TRIES = 2  # each worker count drained twice: the machine is shared, the better run is reported
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def children(ppid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def uptime_load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


class Workers:
    def __init__(self, cfg: Path, n: int, log: Path):
        self.procs = [subprocess.Popen([sys.executable, "-m", "bureau", "ingest", "--config", str(cfg),
                                        "--worker-id", f"w{k}", "--log-level", "WARNING"],
                                       stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, cwd=ROOT)  # noqa: SIM115
                      for k in range(n)]
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.startswith("edge-bureau ingest: worker"), line

    def cpu(self) -> float:
        return sum(cpu_s(p.pid) for p in self.procs)

    def stop(self) -> int:
        """Stop them all; the batches they had to apply again (after meeting another worker)."""
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        retried = 0
        for p in self.procs:
            out, _ = p.communicate(timeout=60)
            last = out.strip().splitlines()[-1] if out.strip() else ""
            if "batches retried" in last:
                retried += int(last.rsplit(",", 1)[1].split()[0])
        return retried


def publish(port: int, msgs: list[tuple[str, bytes, bool]]) -> float:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-fleet")
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t = time.perf_counter()
    infos = [c.publish(tp, p, qos=1, retain=r) for tp, p, r in msgs]
    for info in infos:
        info.wait_for_publish(120)
    took = time.perf_counter() - t
    c.loop_stop()
    c.disconnect()
    return took


def stored(conn: psycopg.Connection) -> int:  # type: ignore[type-arg]
    row = conn.execute("SELECT (SELECT COUNT(*) FROM seen) + (SELECT COUNT(*) FROM bundle_files) + "
                       "(SELECT COUNT(*) FROM bundles WHERE manifest_hash IS NOT NULL)").fetchone()
    return int(row[0]) if row else 0


def run_once(n: int, cluster: Cluster, broker: Broker, msgs: list[tuple[str, bytes, bool]], total: int,
             tmp: Path) -> tuple[dict[str, object], str]:
    dsn = cluster.fresh()
    tmp.mkdir(exist_ok=True)
    cfg = tmp / f"bureau-{n}.yaml"
    cfg.write_text(json.dumps({
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": f"bench{n}-{tmp.name}", "protocol": "5"},
        "store": {"kind": "postgres", "dsn": dsn, "data_dir": str(tmp / f"data-{n}"),
                  "evidence_dir": str(tmp / f"evidence-{n}"), "pool_size": 4},
        "ingest": {"shared_group": f"bench{n}-{tmp.name}"}}))
    Workers(cfg, n, tmp / f"w{n}.log").stop()  # the sessions now exist: the broker keeps their share
    publish_s = publish(broker.port, msgs)
    postmaster = int((cluster.dir / "data" / "postmaster.pid").read_text().split()[0])
    pg_pids = [postmaster, *children(postmaster)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        workers = Workers(cfg, n, tmp / f"w{n}.log")
        base = {"broker": cpu_s(broker.proc.pid) if broker.proc else 0.0, "pg": sum(cpu_s(p) for p in pg_pids),
                "workers": workers.cpu()}
        first_t, first_n = None, 0
        deadline = time.monotonic() + 300
        last = 0
        while time.monotonic() < deadline:
            last = stored(conn)
            if first_t is None and last > 0:
                first_t, first_n = time.perf_counter(), last
                base = {"broker": cpu_s(broker.proc.pid) if broker.proc else 0.0,
                        "pg": sum(cpu_s(p) for p in [postmaster, *children(postmaster)]), "workers": workers.cpu()}
            if last >= total:
                break
            time.sleep(0.05)
        done_t = time.perf_counter()
        pg_now = [postmaster, *children(postmaster)]
        used = {"broker": (cpu_s(broker.proc.pid) if broker.proc else 0.0) - base["broker"],
                "pg": sum(cpu_s(p) for p in pg_now) - base["pg"], "workers": workers.cpu() - base["workers"]}
        valid = conn.execute("SELECT COUNT(*) FROM bundles WHERE verification IN ('valid', 'unverified')"
                             ).fetchone()
        retried = workers.stop()
    window = done_t - (first_t or done_t)
    rate = (last - first_n) / window if window > 0 else 0.0
    return {"workers": n, "msg_s": round(rate), "stored": last, "complete": last >= total,
            "drain_s": round(window, 2), "publish_s": round(publish_s, 1),
            "bundles_checked": int(valid[0]) if valid else 0, "batches_retried": retried,
            "cpu_share_of_2_cores": {k: round(v / window / 2, 2) if window > 0 else None for k, v in used.items()},
            }, dsn


def p95(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def fleet_page_p95(dsn: str, tmp: Path) -> tuple[float, int]:
    import uvicorn

    from bureau.app import Console
    from bureau.auth import hash_password
    from bureau.config import BureauConfig
    from bureau.web.app import create_app

    config = BureauConfig.model_validate({"store": {"kind": "postgres", "dsn": dsn, "data_dir": str(tmp / "web")},
                                          "web": {"cookie_secure": False}})
    console = Console(config)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(console), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    console.store.add_user("bench", "viewer", hash_password("bench-password"), time.time())
    token, _csrf = console.sessions.login("bench", "bench-password") or ("", "")
    cookie = {"Cookie": f"bureau_session={token}"}
    times = []
    size = 0
    for n in range(33):
        t = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", headers=cookie)) as r:
            body = r.read()
            assert r.status == 200 and len(body) > 1000
            size = len(body)
        if n >= 3:
            times.append((time.perf_counter() - t) * 1000)
    devices = len(console.store.fleet())
    server.should_exit = True
    thread.join(5)
    console.store.close()
    return round(p95(times), 1), devices if size else 0


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-city-"))
    (tmp / "broker").mkdir()
    load_before = uptime_load()
    broker = Broker(tmp / "broker").start()
    cluster = Cluster(durable=True)
    try:
        t = time.perf_counter()
        boxes = make_boxes(BOXES, tmp / "fleet")
        plain = backlog(boxes[VIOLATING:], MINUTES)
        violating = backlog(boxes[:VIOLATING], MINUTES, violations=1, seed=1)
        # Interleave the two streams, each in its own time order.
        msgs: list[tuple[str, bytes, bool]] = []
        step = len(plain) / max(1, len(violating))
        j = 0
        for i, m in enumerate(violating):
            upto = round((i + 1) * step)
            msgs.extend(plain[j:upto])
            j = upto
            msgs.append(m)
        msgs.extend(plain[j:])
        make_s = time.perf_counter() - t
        total = len(msgs)  # JSON messages, evidence files and manifests: each one row in seen/bundle_files/bundles
        runs = []
        dsn = ""
        for n in WORKERS:
            tries = []
            for k in range(TRIES):
                result, dsn = run_once(n, cluster, broker, msgs, total, tmp / f"try{k}")
                tries.append(result)
            best = max(tries, key=lambda r: float(r["msg_s"]))  # type: ignore[arg-type]
            runs.append({**best, "msg_s_tries": [r["msg_s"] for r in tries]})
        fleet_p95, devices = fleet_page_p95(dsn, tmp)
        one = runs[0]["msg_s"] or 1
        real_rate = BOXES * (1 / TELEMETRY_S + 1 / STATUS_S)
        out = {
            "bench": "bureau_scale", "boxes": BOXES, "messages": total, "bundles": VIOLATING,
            "make_messages_s": round(make_s, 1), "runs": runs,
            "scaling_2_over_1": round(float(runs[1]["msg_s"]) / float(one), 2),  # type: ignore[arg-type]
            "scaling_4_over_1": round(float(runs[2]["msg_s"]) / float(one), 2),  # type: ignore[arg-type]
            "real_rate_msg_s": round(real_rate, 1),
            "fleet_page_p95_ms": fleet_p95, "fleet_page_devices": devices,
            "cores": os.cpu_count(), "load_before": load_before, "load_after": uptime_load(),
            "postgres": "15, durable defaults", "broker": "mosquitto 2, one node",
        }
        out["ok"] = bool(all(r["complete"] for r in runs) and devices == BOXES)
        print(json.dumps(out))
    finally:
        broker.stop()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
