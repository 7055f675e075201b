"""Shared fixtures: a real Mosquitto broker on 127.0.0.1 (skipped cleanly if not installed)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
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


@pytest.fixture
def pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """gpiozero's mock pin factory, reset before and after: `pins.pin(N).states` is the history."""
    pytest.importorskip("gpiozero")
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    if not isinstance(Device.pin_factory, MockFactory):
        Device.pin_factory = MockFactory()
    Device.pin_factory.reset()
    yield Device.pin_factory
    Device.pin_factory.reset()
