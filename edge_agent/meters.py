"""Meters: turn the `meters:` config into one bus thread per serial port.

A bus thread only polls and hands each reading to `submit` (the core's bounded queue): the
figures, rules, speaker and outbox work happen on the core thread, never on the thread
that owns a serial port. Per-meter health (ok / degraded / down, last good time, error
counts by kind, last error text) is what `…/status` publishes and what a `device_fault`
violation is raised from.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime

from drivers.modbus.poller import BusPoller, BusSpec, MeterSpec
from drivers.modbus.profile import load_profile
from drivers.types import Reading
from edge_agent.config.meters import MeterConfig
from edge_agent.measures import MeasureEngine

log = logging.getLogger(__name__)


def build_buses(meters: Sequence[MeterConfig]) -> list[BusSpec]:
    """Group enabled meters by port; line settings come from the first meter (config checked they agree)."""
    by_port: dict[str, list[MeterConfig]] = defaultdict(list)
    for m in meters:
        if m.enabled:
            by_port[m.port].append(m)
    buses = []
    for port, group in by_port.items():
        first = group[0]
        specs = tuple(
            MeterSpec(id=m.id, address=m.address, profile=load_profile(m.profile), poll_interval_s=m.poll_interval_s,
                      timeout_s=m.timeout_s, retries=m.retries, stale_after_s=m.stale_after_s)
            for m in group
        )
        buses.append(BusSpec(port=port, baud=first.baud, parity=first.parity, stopbits=first.stopbits,
                             gap_s=max(m.gap_s for m in group), meters=specs))
    return buses


class MetersComponent:
    """The component named "meters": one BusPoller per port."""

    name = "meters"

    def __init__(self, meters: Sequence[MeterConfig], engine: MeasureEngine, submit: Callable[[Reading], None],
                 now: Callable[[], datetime]):
        self._buses = build_buses(meters)
        for bus in self._buses:
            for m in bus.meters:
                engine.set_sample_period(m.id, m.poll_interval_s)
        self._pollers = [BusPoller(bus, submit, now=now) for bus in self._buses]

    def start(self) -> None:
        for p in self._pollers:
            p.start()
        if self._pollers:
            log.info("meters: %d meter(s) on %d bus(es)", sum(len(b.meters) for b in self._buses), len(self._buses))

    def stop(self) -> None:
        for p in self._pollers:
            p.stop()

    def alive(self) -> bool:
        return all(p.alive() for p in self._pollers)

    def health(self) -> dict[str, dict[str, object]]:
        """Per meter id: state (ok/degraded/down), last_ok, errors by kind, last_error, ..."""
        out: dict[str, dict[str, object]] = {}
        for p in self._pollers:
            for meter_id, h in p.health().items():
                h["thread_alive"] = p.alive()
                out[meter_id] = h
        return out
