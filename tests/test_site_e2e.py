"""The wired daemon on real parts: a simulated meter on a pty pair, the agent, a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

from agent_config import BASE, write_config
from broker import Broker, Recorder
from serial_helpers import socat_pair

from drivers.modbus.profile import load_profile
from edge_agent.clock import SkippingClock
from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from firmware_tools.simulator import ConstantSource, SimMeter, Simulator

ALWAYS_NIGHT = {"night": [{"start": "00:00", "end": "00:00"}], "quiet": []}


def test_meter_readings_become_telemetry_and_a_night_lmax_event(mosquitto: Broker, tmp_path: Path):
    with socat_pair(tmp_path) as pty:
        sim = Simulator(pty.meter, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(52.0))]).start()
        config = write_config(
            tmp_path, mosquitto.port,
            telemetry={"interval_s": 2, "status_interval_s": 60},
            meters=[{"id": "noise-1", "port": pty.agent, "profile": "renke_rs_zs_n01", "baud": 9600,
                     "poll_interval_s": 0.5}],
            schedule=ALWAYS_NIGHT,
            rules={"night_lmax": {"timing": {"min_duration_s": 0, "clear_s": 1, "cooldown_s": 0}},
                   "noise": {"enabled": False}, "early_warning": {"enabled": False},
                   "night_work": {"enabled": False}},
        )
        bureau = Recorder(mosquitto.port, f"{BASE}/#").start()
        parts = build_agent(load_config(config))
        agent = parts.agent
        agent.start()
        try:
            tele = bureau.wait_for(lambda: [p for p in bureau.payloads("telemetry")
                                            if any(m["sensor"] == "noise-1" for m in p["measures"])], timeout=15)
            assert tele, "no telemetry with the meter's figures"
            leq = [m for m in tele[-1]["measures"] if m["figure"] == "leq" and m["window_s"] == 60]
            assert leq and abs(leq[0]["value"] - 52.0) < 0.05 and leq[0]["samples"] >= 1

            sim.set_value("noise_la", 80.0)  # 80 > 55 + 15 at night
            started = bureau.wait_for(lambda: [e for e in bureau.payloads("event")
                                               if e["kind"] == "night_lmax" and e["state"] == "started"], timeout=10)
            assert started and started[0]["figures"]["lmax"] == 80.0 and started[0]["source"] == "noise-1"

            sim.set_value("noise_la", 50.0)
            ended = bureau.wait_for(lambda: [e for e in bureau.payloads("event")
                                             if e["kind"] == "night_lmax" and e["state"] == "ended"], timeout=10)
            assert ended and ended[0]["key"] == started[0]["key"]

            status = agent.status_payload()
            assert status["components"]["meters/noise-1"]["state"] == "ok"
            assert agent.archive.count("event") >= 2  # kept on site too
        finally:
            agent.stop(timeout=2)
            bureau.stop()
            sim.stop()


def test_a_dead_meter_becomes_a_device_fault(mosquitto: Broker, tmp_path: Path):
    clock = SkippingClock()
    with socat_pair(tmp_path) as pty:
        config = write_config(tmp_path, mosquitto.port,
                              meters=[{"id": "dust-1", "port": pty.agent, "profile": "renke_rs_pm_n01",
                                       "poll_interval_s": 0.3, "timeout_s": 0.1}])
        bureau = Recorder(mosquitto.port, f"{BASE}/event").start()
        parts = build_agent(load_config(config), clock=clock)
        agent = parts.agent
        agent.start()  # nothing answers on the other end of the pair
        try:
            assert bureau.wait_for(lambda: parts.meters.health()["dust-1"]["state"] == "down", timeout=10)
            seen_down = parts.figures.evaluations + 2  # the core has judged the meter down at least once
            assert bureau.wait_for(lambda: parts.figures.evaluations >= seen_down, timeout=5)
            assert not [e for e in bureau.payloads("event") if e["kind"] == "device_fault"]
            clock.skip(61)  # a meter must be down for 60 s before it is a fault: don't wait it out
            faults = bureau.wait_for(lambda: [e for e in bureau.payloads("event")
                                              if e["kind"] == "device_fault"], timeout=15)
            assert faults, "a dead meter raised no device_fault"
            assert faults[0]["source"] == "dust-1" and faults[0]["figures"]["state"] == "down"
            assert agent.status_payload()["components"]["meters/dust-1"]["state"] == "down"
        finally:
            agent.stop(timeout=2)
            bureau.stop()
