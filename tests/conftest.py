"""Shared fixtures: a real Mosquitto broker on 127.0.0.1 (skipped cleanly if not installed)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker import Broker

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def mosquitto(tmp_path: Path):
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    work = tmp_path / "broker"
    work.mkdir()
    broker = Broker(work).start()
    yield broker
    broker.stop()
