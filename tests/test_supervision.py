"""A component whose thread dies is restarted with back-off and reported in status."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent_config import write_config
from broker import free_port

from edge_agent.app import Agent
from edge_agent.config import load_config


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
