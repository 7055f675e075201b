"""Violation state survives the process: SIGKILL, restarts and orderly stops (issue: nothing lost).

Real parts: `edge-agent run` as its own process (SIGKILLed for real), a simulated noise meter on
a socat pty pair, a real Mosquitto with the bureau's recorder on it.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from agent_config import BASE, write_config
from broker import Broker, Recorder
from serial_helpers import socat_pair

from drivers.modbus.profile import load_profile
from edge_agent.clock import SkippingClock
from edge_agent.config import load_config
from edge_agent.daemon import build_agent, recovery_grace_s
from firmware_tools.simulator import ConstantSource, SimMeter, Simulator

ALWAYS_NIGHT = {"night": [{"start": "00:00", "end": "00:00"}], "quiet": []}
ONLY_LMAX = {"noise": {"enabled": False}, "early_warning": {"enabled": False}, "night_work": {"enabled": False},
             "dust": {"enabled": False}}


def events(bureau: Recorder, kind: str = "night_lmax") -> list[dict]:
    return [e for e in bureau.payloads("event") if e["kind"] == kind]


def manifests(bureau: Recorder) -> list[dict]:
    with bureau.lock:
        return [json.loads(m.payload) for m in bureau.messages if m.topic == f"{BASE}/evidence"]


def run_agent(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def owed_bundles(data: Path) -> list[str]:
    db = sqlite3.connect(data / "violations.sqlite")
    try:
        return [k for (k,) in db.execute("SELECT key FROM evidence_jobs")]
    finally:
        db.close()


def test_sigkill_keeps_the_violation_under_its_key_and_its_bundle_is_still_built(mosquitto: Broker, tmp_path: Path):
    with socat_pair(tmp_path) as pty:
        sim = Simulator(pty.meter, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(80.0))]).start()
        # A camera that never answers makes each bundle wait seconds for its clip: the kill lands
        # while the bundle is still owed, the case that used to lose it for good.
        config = write_config(tmp_path, mosquitto.port, schedule=ALWAYS_NIGHT, rules=ONLY_LMAX,
                              meters=[{"id": "noise-1", "port": pty.agent, "profile": "renke_rs_zs_n01",
                                       "poll_interval_s": 0.5}],
                              cameras=[{"id": "cam1", "url": "rtsp://127.0.0.1:9/none", "clip_post_s": 6,
                                        "watchdog_s": 3}])
        bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
        agent = run_agent(config)
        try:
            started = bureau.wait_for(lambda: [e for e in events(bureau) if e["state"] == "started"], 30)
            assert started, "no night_lmax started"
            key = started[0]["key"]
            assert started[0]["evidence_expected"] is True
            assert not any(m["violation"]["key"] == key for m in manifests(bureau))
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            assert owed_bundles(tmp_path / "data") == [key], "the owed bundle was not on disk at the kill"

            agent = run_agent(config)  # the noise is still there
            resumed = bureau.wait_for(lambda: [e for e in events(bureau) if e["state"] == "ongoing"
                                               and e["key"] == key], 30)
            assert resumed, f"the violation did not continue under its key: {events(bureau)}"
            assert resumed[0]["figures"]["resumed_after_restart"] == "yes"
            # No second start. The first may come twice: killed after sending it but before the broker's ack
            # was committed, the outbox sends it again (at least once; the same message id, which the bureau
            # counts once).
            starts = {(e["msg_id"], e["key"]) for e in events(bureau) if e["state"] == "started"}
            assert starts == {(started[0]["msg_id"], key)}, starts
            bundle = bureau.wait_for(lambda: [m for m in manifests(bureau) if m["violation"]["key"] == key], 30)
            assert bundle, "the bundle owed before the kill was never built"
            assert bundle[0]["violation"]["figures"]["recovered_after_restart"] == "yes"
            # Built and sent: no longer owed (the dead camera's own device_fault may owe one of its own).
            assert bureau.wait_for(lambda: key not in owed_bundles(tmp_path / "data"), 10)

            # An orderly stop ends nothing, and says what was open.
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(15) == 0
            offline = [s for s in bureau.payloads("status") if s["state"] == "offline"][-1]
            assert key in offline["components"]["violations"]["open"]
            assert not [e for e in events(bureau) if e["state"] == "ended"]
        finally:
            if agent.poll() is None:
                agent.kill()
            bureau.stop()
            sim.stop()


def test_a_condition_gone_while_down_is_ended_with_the_reason_and_downtime(mosquitto: Broker, tmp_path: Path):
    with socat_pair(tmp_path) as pty:
        sim = Simulator(pty.meter, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(80.0))]).start()
        config = load_config(write_config(tmp_path, mosquitto.port, schedule=ALWAYS_NIGHT, rules=ONLY_LMAX,
                                          meters=[{"id": "noise-1", "port": pty.agent,
                                                   "profile": "renke_rs_zs_n01", "poll_interval_s": 0.5}]))
        bureau = Recorder(mosquitto.port, f"{BASE}/event").start()
        first = build_agent(config)
        first.start()
        try:
            started = bureau.wait_for(lambda: [e for e in events(bureau) if e["state"] == "started"], 20)
            assert started
        finally:
            first.stop(timeout=2)
        sim.set_value("noise_la", 40.0)  # quiet while the box is down
        time.sleep(2)
        clock = SkippingClock()
        second = build_agent(config, clock=clock)
        second.start()
        try:
            time.sleep(3)  # readings flow, all quiet: nothing proves the breach any longer
            assert not [e for e in events(bureau) if e["state"] == "ended"]
            assert started[0]["key"] in second.violations.health()["waiting_after_restart"]
            grace = recovery_grace_s(config, second.violations.store.open_violations()[0].violation)
            clock.skip(grace + 1)
            ended = bureau.wait_for(lambda: [e for e in events(bureau) if e["state"] == "ended"], 10)
            assert ended and ended[0]["key"] == started[0]["key"]
            assert ended[0]["figures"]["reason"] == "cleared_while_down"
            assert ended[0]["figures"]["downtime_s"] >= 2
            assert not second.violations.store.open_violations()
        finally:
            second.stop(timeout=2)
            bureau.stop()
            sim.stop()


@pytest.mark.parametrize("corrupt", [b"not a database at all" * 100])
def test_a_corrupt_store_is_moved_aside_and_the_agent_starts(tmp_path: Path, corrupt: bytes):
    from edge_agent.violation_store import ViolationStore

    path = tmp_path / "violations.sqlite"
    path.write_bytes(corrupt)
    store = ViolationStore(path)
    assert store.open_violations() == [] and list(tmp_path.glob("violations.sqlite.corrupt-*"))


def test_a_full_disk_delays_the_violation_records_but_never_loses_or_doubles_them(tmp_path: Path):
    """Started and ended while the disk is full: both reach the store, in order, once there is room."""
    from small_fs import fill, small_filesystem

    from edge_agent.archive import Archive
    from edge_agent.clock import SystemClock
    from edge_agent.types import Violation
    from edge_agent.violation_store import ViolationStore
    from edge_agent.violations import ViolationPath

    published: list[dict] = []
    with small_filesystem(tmp_path / "disk", 2048) as disk:
        store = ViolationStore(disk / "violations.sqlite")
        path = ViolationPath(act=lambda v: None, publish=lambda leaf, body, kind: published.append(body),
                             archive=Archive(tmp_path / "archive.sqlite"), evidence=None, store=store,
                             clock=SystemClock())
        filler = fill(disk)
        t = datetime(2026, 12, 1, 16, tzinfo=timezone.utc)
        started = Violation("night_lmax", "started", "night_lmax:noise-1:1", t, t, "noise-1", {"lmax": 80.0})
        path.report(started)
        path.report(Violation("night_lmax", "ended", started.key, t + timedelta(seconds=30), t, "noise-1", {}))
        assert [b["state"] for b in published] == ["started", "ended"]  # the bureau is told at once
        assert path.health()["unstored"] == 2 and store.open_violations() == []
        filler.unlink()
        path.start()
        try:
            assert wait(lambda: path.health()["unstored"] == 0, 10), path.health()
        finally:
            path.stop()
        # Started then ended, applied in order: nothing is left open to come back after a restart.
        assert store.open_violations() == []


def wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_several_open_violations_of_one_camera_each_continue_or_end_after_a_restart(tmp_path: Path):
    from edge_agent.archive import Archive
    from edge_agent.clock import SkippingClock
    from edge_agent.types import Violation
    from edge_agent.violation_store import ViolationStore
    from edge_agent.violations import ViolationPath

    t = datetime(2026, 12, 1, 16, tzinfo=timezone.utc)
    store = ViolationStore(tmp_path / "violations.sqlite")
    plumes = [Violation("black_smoke", "started", f"black_smoke:cam-1:black_smoke:cam-1:{i}", t, t, "cam-1",
                        {"ringelmann": 3.0}) for i in (1, 2, 3)]
    for v in plumes:
        store.started(v, evidence=False)
    published: list[dict] = []
    clock = SkippingClock()
    path = ViolationPath(act=lambda v: None, publish=lambda leaf, body, kind: published.append(body),
                         archive=Archive(tmp_path / "archive.sqlite"), evidence=None, store=store,
                         grace_s=lambda v: 60.0, clock=clock)
    assert len(path.health()["waiting_after_restart"]) == 3
    # One plume is still there after the restart: it continues under the oldest key.
    path.report(Violation("black_smoke", "started", "black_smoke:cam-1:new", t, t, "cam-1", {"ringelmann": 3.0}))
    assert published[-1]["state"] == "ongoing" and published[-1]["key"] == plumes[0].key
    path.start()
    try:
        clock.skip(61)
        assert wait(lambda: sum(b["state"] == "ended" for b in published) == 2, 10), published
    finally:
        path.stop()
    ended = {b["key"] for b in published if b["state"] == "ended"}
    assert ended == {plumes[1].key, plumes[2].key}
    assert {v.violation.key for v in store.open_violations()} == {plumes[0].key}
