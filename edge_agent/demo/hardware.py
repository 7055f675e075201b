"""Simulated hardware for the demo: an RS-485 bus as a socat pty pair with meters on the far end.

The meters run as a child process (`python -m firmware_tools.simulator`), exactly as a
technician would run them on a bench, so the demo exercises the same serial path as a box.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


class SimulatedBus:
    def __init__(self, folder: Path, meters: list[tuple[str, int]], scenario: str, seed: int = 0):
        """`meters`: (profile, address) pairs on this bus; `scenario`: the simulator's value pattern."""
        self.folder = folder
        self.meters = meters
        self.scenario = scenario
        self.seed = seed
        self.agent_port = str(folder / "ttyAGENT")
        self.meter_port = str(folder / "ttyMETER")
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> SimulatedBus:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("the demo's serial bus needs socat: apt-get install socat")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._procs.append(subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={self.meter_port}", f"pty,raw,echo=0,link={self.agent_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 5
        while not (Path(self.meter_port).exists() and Path(self.agent_port).exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.02)
        cmd = [sys.executable, "-m", "firmware_tools.simulator", "--port", self.meter_port,
               "--scenario", self.scenario, "--seed", str(self.seed)]
        for profile, address in self.meters:
            cmd += ["--profile", profile, "--address", str(address)]
        self._procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self._procs.clear()
