"""A component whose thread dies is restarted with back-off and reported in status: a toy component,
then every component of a whole box (meters, core, cameras, detectors, speaker/relays, evidence,
bureau commands, HJ 212, janitor, uplink) with its threads killed in turn."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from agent_config import write_config
from broker import Broker, free_port
from rtsp_helpers import RtspServer, require_ffmpeg, require_rtsp
from serial_helpers import socat_pair

from drivers.modbus.profile import load_profile
from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.daemon import build_agent
from edge_agent.hj212.server import Hj212Server
from firmware_tools.simulator import ConstantSource, SimMeter, Simulator


class Flaky:
    """A component whose worker thread dies shortly after each start."""

    name = "flaky"

    def __init__(self) -> None:
        self.starts = 0
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.starts += 1
        self.thread = threading.Thread(target=time.sleep, args=(0.2,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        pass

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def health(self) -> dict[str, object]:
        return {"state": "ok" if self.alive() else "down"}


def test_dead_component_is_restarted_with_backoff_and_reported(tmp_path: Path):
    agent = Agent(load_config(write_config(tmp_path, free_port())))  # no broker: the rest must not care
    flaky = Flaky()
    agent.add_component(flaky)
    agent.start()
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and flaky.starts < 2:
            time.sleep(0.05)
        assert flaky.starts == 2, "not restarted after its thread died"
        time.sleep(2.0)
        assert flaky.starts == 2, "restarted again before the 5 s back-off"
        assert agent.status_payload()["components"]["flaky"]["restarts"] == 1
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and flaky.starts < 3:
            time.sleep(0.05)
        assert flaky.starts == 3 and agent.restarts["flaky"] == 2
    finally:
        agent.stop(timeout=1)


class Stoppable:
    """A component with a worker thread that ends when stopped (as the evidence worker's does)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.starts = 0
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.starts += 1
        self._stop.clear()
        self.thread = threading.Thread(target=self._stop.wait, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(2)

    def alive(self) -> bool:
        return self.thread is None or self.thread.is_alive()

    def health(self) -> dict[str, object]:
        return {"state": "ok"}


def test_the_supervisor_brings_back_nothing_the_agent_is_stopping():
    """The agent's loop may check its components once more while they are being stopped: a stopped
    component looks dead, and restarting it then left a thread running on a closed store (a bundle
    job failing with "Cannot operate on a closed database" after the agent had stopped)."""
    from edge_agent.component import Supervisor

    comps = [Stoppable("evidence"), Stoppable("violations")]
    sup = Supervisor(list(comps), time.monotonic, first_delay_s=0.0)
    sup.start_all()
    comps[0].stop()  # died while running: restarted, as before
    sup.check()
    assert comps[0].starts == 2 and comps[0].alive()
    sup.stop_all()
    assert not any(c.alive() for c in comps)
    sup.check()  # the loop's last turn, after the stop
    assert [c.starts for c in comps] == [2, 1] and not any(c.alive() for c in comps)
    assert sup.dead() == ["evidence", "violations"]
    sup.start_all()  # a later start watches again
    comps[1].stop()
    sup.check()
    assert comps[1].starts == 3 and comps[1].alive()
    sup.stop_all()


# --- every component of a whole box, its threads killed one component at a time ---------------------


def kill_thread(thread: threading.Thread) -> None:
    """Raise SystemExit inside `thread`, as an uncaught error in its loop would end it."""
    import ctypes

    assert thread.ident is not None
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    assert done == 1, f"could not reach thread {thread.name}"


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


# component name in status -> the prefix of the thread names it runs
THREADS = {
    "core": "core", "meters": "modbus:", "actions": "relays", "evidence": "evidence", "commands": "command-",
    "hj212": "hj212-uplink", "storage": "janitor", "cameras": "cam-cam1-watchdog", "detectors": "detect-cam1",
    "uplink": "uplink-mqtt",
}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the kills themselves
def test_every_component_thread_killed_in_turn_is_restarted_and_reported(
        mosquitto: Broker, tmp_path: Path, pins: object):
    require_rtsp()
    require_ffmpeg()
    from camera_scenes import H, W, encode

    video = encode(tmp_path / "still.mp4", (np.full((H, W, 3), 90 + (i % 5), np.uint8) for i in range(50)))
    platform = Hj212Server("127.0.0.1", 0)
    platform.start()
    server = RtspServer(free_port(), "--file", str(video)).start()
    with socat_pair(tmp_path) as pty:
        sim = Simulator(pty.meter, [SimMeter(load_profile("renke_rs_zs_n01"), 1, ConstantSource(50.0))]).start()
        config = write_config(tmp_path, mosquitto.port,
                       meters=[{"id": "noise-1", "port": pty.agent, "profile": "renke_rs_zs_n01",
                                "poll_interval_s": 0.5}],
                       relays=[{"id": "strobe", "pin": 27}],
                       hj212={"host": "127.0.0.1", "port": platform.port, "mn": "690000D5800028F889221AC0",
                              "pw": "123456", "reconnect_min_s": 0.05, "reconnect_max_s": 0.3},
                       cameras=[{"id": "cam1", "url": server.url, "analysis_fps": 1,
                                 "detectors": ["black_smoke"]}])
        parts = build_agent(load_config(config))
        agent = parts.agent
        agent.start()
        try:
            for name, prefix in THREADS.items():
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and not threads_named(prefix):
                    time.sleep(0.1)
                victims = threads_named(prefix)
                assert victims, f"{name}: no thread named {prefix}*"
                for thread in victims:
                    kill_thread(thread)
                for thread in victims:
                    thread.join(10)
                    assert not thread.is_alive(), f"{name}: thread {thread.name} did not die"
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and agent.restarts.get(name, 0) < 1:
                    time.sleep(0.1)
                assert agent.restarts.get(name) == 1, f"{name} was not restarted: {agent.restarts}"
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not (agent.alive() and threads_named(prefix)):
                    time.sleep(0.1)
                assert threads_named(prefix), f"{name}: no new thread after the restart"
                assert agent.alive(), f"not every component is alive after restarting {name}"
                assert agent.status_payload()["components"].get(name, {}).get("restarts") == 1 or name == "meters"
            # The box still works after all that: readings flow through the restarted core and buses.
            handled = parts.core.handled
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and parts.core.handled <= handled:
                time.sleep(0.1)
            assert parts.core.handled > handled
        finally:
            agent.stop(timeout=2)
            sim.stop()
            server.kill()
            platform.stop()
