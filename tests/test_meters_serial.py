"""End to end over a real pty pair: the bus poller on one end, the Modbus simulator on the other.

Each fault is injected by the simulator on the wire (bad CRC, silence, noise, exception
replies, cut-off frames) or by killing socat (the port vanishes); the poller must stay up,
flag the readings, count the fault in health, and be back to `ok` within two poll periods
after the fault clears.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from serial_helpers import Collector, SocatPair, socat_pair, wait_for

from drivers.modbus import BusPoller, BusSpec, MeterSpec, load_profile
from drivers.types import Quality, Reading
from edge_agent.config.loader import load_config
from edge_agent.measures import MeasureEngine, leq_of
from edge_agent.meters import MetersComponent
from firmware_tools.simulator import ConstantSource, Scenario, SimMeter, Simulator

NOISE = load_profile("renke_rs_zs_n01")
PM = load_profile("renke_rs_pm_n01")
INTERVAL = 0.5



@pytest.fixture
def pty(tmp_path: Path) -> Iterator[SocatPair]:
    """A socat pty pair: `pty.meter` for the simulator, `pty.agent` for the code under test."""
    with socat_pair(tmp_path) as pair:
        yield pair

def _poller(port: str, collector: Collector, interval: float = INTERVAL, retries: int = 0,
            meters: tuple[MeterSpec, ...] | None = None) -> BusPoller:
    meters = meters or (MeterSpec("noise1", 1, NOISE, poll_interval_s=interval, timeout_s=0.15, retries=retries),)
    return BusPoller(BusSpec(port=port, baud=4800, meters=meters, gap_s=0.01), collector, seed=1)


def test_readings_flow_with_values_and_quality(pty: SocatPair) -> None:
    got = Collector()
    with Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(65.3))]):
        poller = _poller(pty.agent, got, interval=0.2)
        poller.start()
        try:
            assert wait_for(lambda: len(got.readings()) >= 5, 5.0)
        finally:
            poller.stop()
    readings = got.readings()
    assert all(r.quality is Quality.OK for r in readings)
    assert {r.value for r in readings} == {65.3}
    assert all(r.sensor_id == "noise1" and r.quantity == "noise_la" and r.unit == "dB(A)" for r in readings)
    assert all(r.time.tzinfo is not None and r.time.utcoffset().total_seconds() == 0 for r in readings)
    health = poller.health()["noise1"]
    assert health["state"] == "ok" and health["last_ok"] is not None
    assert sum(health["errors"].values()) == 0


def test_two_meters_share_one_bus(pty: SocatPair) -> None:
    got = Collector()
    sim = Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(58.0)),
                                       SimMeter(PM, 2, ConstantSource({"pm10": 87.0, "pm2_5": 41.0}))])
    meters = (MeterSpec("noise1", 1, NOISE, poll_interval_s=0.2, timeout_s=0.15),
              MeterSpec("dust1", 2, PM, poll_interval_s=0.3, timeout_s=0.15))
    with sim:
        poller = _poller(pty.agent, got, meters=meters)
        poller.start()
        try:
            assert wait_for(lambda: len(got.readings("pm10")) >= 3 and len(got.readings("noise_la")) >= 3, 5.0)
        finally:
            poller.stop()
    assert {r.value for r in got.readings("noise_la")} == {58.0}
    assert {r.value for r in got.readings("pm10")} == {87.0}
    assert {r.value for r in got.readings("pm2_5")} == {41.0}
    assert all(r.sensor_id == "dust1" for r in got.readings("pm10"))
    assert all(r.quality is Quality.OK for r in got.readings())
    assert {h["state"] for h in poller.health().values()} == {"ok"}


def test_out_of_range_value_is_flagged(pty: SocatPair) -> None:
    got = Collector()
    with Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(20.0))]):  # below the 30 dB range
        poller = _poller(pty.agent, got, interval=0.2)
        poller.start()
        try:
            _, r = got.wait(0.0, Quality.OUT_OF_RANGE, 5.0)
        finally:
            poller.stop()
    assert r.value == pytest.approx(20.0)
    assert poller.health()["noise1"]["state"] == "degraded"


def test_frozen_value_becomes_stale(pty: SocatPair) -> None:
    got = Collector()
    meters = (MeterSpec("noise1", 1, NOISE, poll_interval_s=0.2, timeout_s=0.15, stale_after_s=0.5),)
    with Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(61.0))]) as sim:
        poller = _poller(pty.agent, got, meters=meters)
        poller.start()
        try:
            got.wait(0.0, Quality.OK, 5.0)
            _, stale = got.wait(0.0, Quality.STALE, 5.0)
            changed = time.monotonic()
            sim.set_value("noise_la", 62.5)  # a live value again
            _, fresh = got.wait(changed, Quality.OK, 5.0)
        finally:
            poller.stop()
    assert stale.value == 61.0
    assert fresh.value == 62.5


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("crc", "crc"), ("timeout", "timeout"), ("garbage", "garbage"), ("exception", "exception"),
     ("partial", "timeout")],
)
def test_fault_flags_readings_and_recovers_within_two_polls(pty: SocatPair, fault: str, kind: str) -> None:
    got = Collector()
    with Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(66.6))]) as sim:
        poller = _poller(pty.agent, got)
        poller.start()
        try:
            got.wait(0.0, Quality.OK, 5.0)
            t_fault = time.monotonic()
            sim.set_fault(fault)
            got.wait(t_fault, Quality.COMM_ERROR, 5.0)
            assert wait_for(lambda: poller.health()["noise1"]["state"] == "down", 5.0)
            health = poller.health()["noise1"]
            assert health["errors"][kind] >= 1, health
            assert str(health["last_error"]).startswith(kind)
            assert poller.alive()
            t_clear = time.monotonic()
            sim.set_fault(None)
            t_ok, reading = got.wait(t_clear, Quality.OK, 5.0)
        finally:
            poller.stop()
    assert reading.value == pytest.approx(66.6)
    assert t_ok - t_clear <= 2 * INTERVAL, f"recovered after {t_ok - t_clear:.2f} s"
    bad = [r for r in got.readings(since=t_fault) if r.quality is Quality.COMM_ERROR]
    assert bad and all(r.value is None for r in bad)
    assert poller.health()["noise1"]["state"] == "ok"


def test_noise_before_a_good_frame_is_skipped(pty: SocatPair) -> None:
    got = Collector()
    with Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(70.1))]) as sim:
        sim.set_fault("prefixed")  # random bytes, then a valid answer
        poller = _poller(pty.agent, got, interval=0.2)
        poller.start()
        try:
            assert wait_for(lambda: len(got.readings()) >= 4, 5.0)
        finally:
            poller.stop()
        assert sim.faults_injected >= 4
    assert all(r.quality is Quality.OK and r.value == pytest.approx(70.1) for r in got.readings())


def test_flaky_wiring_keeps_the_agent_up(pty: SocatPair) -> None:
    got = Collector()
    with Simulator(pty.meter, [SimMeter(NOISE, 1, Scenario("flaky_wiring", seed=3))], seed=3) as sim:
        poller = _poller(pty.agent, got, interval=0.1, retries=1)
        poller.start()
        try:
            assert wait_for(lambda: sim.faults_injected >= 12 and len(got.readings()) >= 25, 15.0)
            assert poller.alive()
        finally:
            poller.stop()
    qualities = {r.quality for r in got.readings()}
    assert Quality.OK in qualities
    errors = poller.health()["noise1"]["errors"]
    assert sum(1 for k in ("crc", "timeout", "garbage", "exception") if errors[k]) >= 3, errors
    ok = [r.value for r in got.readings() if r.quality is Quality.OK]
    assert all(30.0 <= v <= 120.0 for v in ok)  # no mis-decoded frame slipped through as a value


def test_port_vanishes_and_comes_back(pty: SocatPair) -> None:
    got = Collector()
    sim = Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(63.2))])
    with sim:
        poller = _poller(pty.agent, got)
        poller.start()
        try:
            got.wait(0.0, Quality.OK, 5.0)
            t_pull = time.monotonic()
            pty.stop()  # the USB adapter is pulled: both pty paths disappear
            got.wait(t_pull, Quality.COMM_ERROR, 5.0)
            assert wait_for(lambda: poller.health()["noise1"]["state"] == "down", 5.0)
            health = poller.health()["noise1"]
            assert health["errors"]["port"] >= 1 and health["port_open"] is False
            assert "no such port" in str(health["last_error"]) or "port failed" in str(health["last_error"])
            assert poller.alive()
            pty.start()  # plugged back in (new pty numbers, same paths)
            assert wait_for(lambda: sim.opened.is_set(), 2.0)
            t_back = time.monotonic()
            t_ok, reading = got.wait(t_back, Quality.OK, 5.0)
        finally:
            poller.stop()
    assert reading.value == pytest.approx(63.2)
    assert t_ok - t_back <= 2 * INTERVAL, f"recovered after {t_ok - t_back:.2f} s"
    assert poller.health()["noise1"]["state"] == "ok"


def test_component_from_config_feeds_engine_with_exact_figures(pty: SocatPair, tmp_path: Path) -> None:
    """Config -> MetersComponent -> (the core's hand-over) -> engine; the Leq is an energy mean of what arrived."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "site: {id: site1}\n"
        "device: {id: box1}\n"
        "meters:\n"
        f"  - {{id: noise1, port: {pty.agent}, baud: 4800, address: 1, profile: renke_rs_zs_n01,\n"
        "      poll_interval_s: 0.2, timeout_s: 0.15}\n"
        f"  - {{id: dust1, port: {pty.agent}, baud: 4800, address: 2, profile: renke_rs_pm_n01,\n"
        "      poll_interval_s: 0.2, timeout_s: 0.15}\n",
        encoding="utf-8",
    )
    config = load_config(cfg)
    engine = MeasureEngine("Asia/Shanghai")
    got = Collector()
    sim = Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(50.0)),
                                       SimMeter(PM, 2, ConstantSource({"pm10": 100.0, "pm2_5": 40.0}))])
    levels = [50.0, 55.5, 61.2, 72.9, 58.3, 90.0]
    def submit(reading: Reading) -> None:  # what the core does with each reading the buses hand over
        engine.add(reading)
        got(reading)

    component = MetersComponent(config.meters, engine, submit, lambda: datetime.now(timezone.utc))
    with sim:
        component.start()
        try:
            for i, level in enumerate(levels):  # ramp the noise while the poller runs
                sim.set_value("noise_la", level)
                sim.set_value("pm10", 100.0 + 10 * i)
                t = time.monotonic()
                assert wait_for(lambda t=t: len(got.readings("noise_la", since=t)) >= 2, 5.0)
            health = component.health()
        finally:
            component.stop()
        last = max(r.time for r in got.readings())
        measures = engine.rolling(last)
    noise = [r.value for r in got.readings("noise_la") if r.quality is Quality.OK]
    pm10 = [r.value for r in got.readings("pm10") if r.quality is Quality.OK]
    assert set(levels) <= set(noise)
    by = {(m.sensor_id, m.quantity, m.window_s, m.figure): m for m in measures}
    leq = by[("noise1", "noise_la", 60, "leq")]
    assert leq.samples == len(noise)
    assert leq.value == pytest.approx(leq_of(noise), abs=1e-9)
    assert by[("noise1", "noise_la", 60, "lmax")].value == max(noise)
    avg = by[("dust1", "pm10", 60, "avg")]
    assert avg.value == pytest.approx(math.fsum(pm10) / len(pm10))
    assert set(health) == {"noise1", "dust1"}
    assert all(h["state"] == "ok" and h["thread_alive"] for h in health.values())
