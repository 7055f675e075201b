"""The daemon: one process that owns the outbox, the uplink and every device component.

Components (meters, core, cameras, detectors, speaker and relays, evidence, bureau commands,
HJ 212, the janitor) are registered with the agent before it starts: each contributes health
to the retained status, and the supervisor (edge_agent/component.py) restarts any whose
threads die, with back-off; the systemd watchdog is pinged only while all of them, and the
uplink, are alive. The process itself exits only on a fatal error, and systemd restarts it.
How the parts are built and joined is edge_agent/daemon.py.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.archive import Archive
from edge_agent.clock import SYSTEM_CLOCK, Clock, ClockSteps, clock_synchronized
from edge_agent.component import Component, Supervisor
from edge_agent.config import AgentConfig, Problem
from edge_agent.config import config_warnings as unlocated_warnings
from edge_agent.outbox import Message, Outbox, StorageFull, encode_json
from edge_agent.sd_notify import notify, watchdog_interval_s
from edge_agent.timefmt import iso
from edge_agent.uplink.mqtt import MqttUplink
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

TelemetrySource = Callable[[datetime], Mapping[str, Any]]
HELD_TELEMETRY_MAX = 1440  # a day of minutes kept in memory while the disk is full


class Agent:
    """The outbox, the uplink, the archive and the registered components, with their ticker."""

    def __init__(self, config: AgentConfig, *, clock: Clock = SYSTEM_CLOCK, steps: ClockSteps | None = None,
                 config_warnings: Sequence[Problem] | None = None):
        self.config = config
        # What check-config warns about (with lines when loaded from a file): logged at start, in the status.
        self.config_warnings = list(config_warnings if config_warnings is not None else unlocated_warnings(config))
        self.clock = clock
        self.steps = steps or ClockSteps()
        self.started = clock.now()
        self._started_mono = clock.monotonic()
        self.tz = config.site.timezone
        data_dir = Path(config.storage.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.outbox = Outbox(data_dir / "outbox.sqlite", config.storage.outbox_max_mb * 1024 * 1024,
                             fsync=config.storage.fsync)
        self.topics = Topics(config.mqtt.topic_prefix, config.site.id, config.device.id)
        self.uplink = MqttUplink(
            config.mqtt, self.topics, self.outbox,
            will=lambda msg_id: encode_json(self._identity() | {"state": "offline", "reason": "connection lost"},
                                            msg_id),
            on_connected=self._on_uplink_connected, timezone=config.site.timezone,
        )
        self.archive = Archive(data_dir / "archive.sqlite")
        self.components: list[Component] = []
        self.telemetry_sources: dict[str, TelemetrySource] = {}
        self._reloads: list[Callable[[], None]] = []
        self._held_telemetry: deque[_HeldMinute] = deque(maxlen=HELD_TELEMETRY_MAX)
        self.supervisor = Supervisor(self.components, clock.monotonic, watched=[_UplinkThread(self.uplink)])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clock_sync: bool | None = clock_synchronized()
        # The config in use (its sha256, the last remote change): the status's `config`, kept by the
        # `config` component (edge_agent/fleet/remote_config.py) when the config came from a file.
        self.config_info: dict[str, Any] = {}
        self._run_stop = threading.Event()
        self.restart_reason: str | None = None  # set: `edge-agent run` starts the process again

    # --- registration (before start) ------------------------------------------------------------

    def add_component(self, component: Component) -> None:
        self.components.append(component)

    def add_telemetry(self, name: str, source: TelemetrySource) -> None:
        self.telemetry_sources[name] = source

    def on_reload(self, callback: Callable[[], None]) -> None:
        """Run `callback` on SIGHUP (e.g. pick up a newly installed detector head now)."""
        self._reloads.append(callback)

    @property
    def restarts(self) -> dict[str, int]:
        return self.supervisor.restarts

    # --- messages --------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {"site": self.config.site.id, "device": self.config.device.id, "version": __version__}

    def publish(self, leaf: str, payload: bytes | Mapping[str, Any], *, kind: str, retain: bool = False,
                qos: int = 1) -> Message:
        """Store a message for the bureau (durably) and nudge the uplink."""
        if isinstance(payload, Mapping):
            payload = {"time": iso(self.clock.now(), self.tz), **self._identity(),
                       "clock_synchronized": self._clock_sync, **payload}
        msg = self.outbox.put(leaf, payload, kind=kind, retain=retain, qos=qos)
        self.uplink.wake()
        return msg

    def status_payload(self, state: str = "online") -> dict[str, Any]:
        health = {"uplink": self.uplink.health.as_dict()}
        for comp in self.components:
            try:
                report = dict(comp.health())
            except Exception as exc:
                report = {"state": "down", "last_error": f"health check failed: {exc}"}
            if report and "state" not in report and all(isinstance(v, Mapping) for v in report.values()):
                # A component of several devices (meters, cameras): one entry per device.
                health.update({f"{comp.name}/{device}": dict(h) for device, h in report.items()})
            else:
                health[comp.name] = report
        for name, count in self.supervisor.restarts.items():
            if name in health:
                health[name] = {**health[name], "restarts": count}
        return {
            "state": state,
            "started": iso(self.started, self.tz),
            "uptime_s": round(self.clock.monotonic() - self._started_mono, 1),
            "clock": {"synchronized": self._clock_sync, **self.steps.status()},
            "outbox": self.outbox.stats(),
            "components": health,
            **self.config.place(),  # location and cameras' poses: the bureau's map places the box
            "limits": self.config.limits(),
            "config_warnings": [w.as_json() for w in self.config_warnings],
            **({"config": dict(self.config_info)} if self.config_info else {}),
        }

    def _on_uplink_connected(self) -> None:
        # The broker may have published our Last Will while we were away: say "online" again.
        self.publish_status()

    def publish_status(self, state: str = "online") -> Message:
        self._clock_sync = clock_synchronized()
        return self.publish(Topics.STATUS, self.status_payload(state), kind="status", retain=True)

    def publish_telemetry(self, end: datetime) -> Message | None:
        body: dict[str, Any] = {"interval_s": self.config.telemetry.interval_s, "end": iso(end, self.tz)}
        measures: list[Any] = []
        for name, source in self.telemetry_sources.items():
            try:
                part = dict(source(end))
            except Exception as exc:
                log.exception("telemetry source %s failed", name)
                part = {"error": str(exc)}
            measures.extend(part.pop("measures", []))
            body.update(part)
        body["measures"] = measures
        self._held_telemetry.append(_HeldMinute(end, body))  # kept until the outbox and the archive have it
        return self._flush_telemetry()

    def _flush_telemetry(self) -> Message | None:
        """Store held minutes, oldest first: a full disk holds them in memory (bounded), never drops them.
        Raises StorageFull while the outbox cannot take the oldest one."""
        last = None
        while self._held_telemetry:
            held = self._held_telemetry[0]
            if held.message is None:
                held.message = self.publish(Topics.TELEMETRY, held.body, kind="telemetry")
            last = held.message
            try:
                self.archive.add("telemetry", held.end, held.body)
            except Exception as exc:  # the on-site copy waits for room too; the bureau's is stored
                log.error("could not archive telemetry (retried): %s", exc)
                return last
            self._held_telemetry.popleft()
        return last

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        log.info("edge-agent %s starting: site %s, device %s, data in %s, outbox holds %d message(s)",
                 __version__, self.config.site.id, self.config.device.id, self.data_dir, self.outbox.depth())
        if self._clock_sync is False:
            log.warning("system clock is not synchronised: every message and bundle will say so")
        for warning in self.config_warnings:
            log.warning("config: %s", warning)
        self.supervisor.start_all()
        self.uplink.start()
        notify("READY=1")  # before the ticker, whose first act may be a watchdog ping
        self._spawn("ticker", self._ticker)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _ticker(self) -> None:
        """Telemetry on the wall-clock boundary of each interval; status refreshes; supervision; watchdog."""
        interval = self.config.telemetry.interval_s
        status_every = self.config.telemetry.status_interval_s
        watchdog = watchdog_interval_s()
        next_tel = _next_boundary(self.clock.now(), interval)
        next_status = self.clock.monotonic() + status_every
        next_watchdog = self.clock.monotonic()
        while not self._stop.is_set():
            now = self.clock.now()
            if next_tel - now > timedelta(seconds=interval):  # the wall clock was stepped back
                next_tel = _next_boundary(now, interval)
            if now >= next_tel:
                try:
                    self.publish_telemetry(next_tel)
                except StorageFull as exc:
                    log.error("telemetry for %s held until the disk has room: %s", next_tel.isoformat(), exc)
                except Exception:
                    log.exception("telemetry failed")
                next_tel = _next_boundary(now, interval)
            elif self._held_telemetry:
                try:
                    self._flush_telemetry()
                except StorageFull:
                    pass  # still full: said when it was first held
            if self.clock.monotonic() >= next_status:
                try:
                    self.publish_status()
                except StorageFull as exc:
                    log.error("status not stored (disk full): %s", exc)
                except Exception:
                    log.exception("status failed")
                next_status = self.clock.monotonic() + status_every
            self.supervisor.check()
            if watchdog is not None and self.clock.monotonic() >= next_watchdog:
                if self.alive():
                    notify("WATCHDOG=1")
                else:
                    log.error("a component thread has died (%s): withholding the systemd watchdog ping",
                              ", ".join(self.supervisor.dead()) or "uplink")
                next_watchdog = self.clock.monotonic() + watchdog
            wait = max(0.05, min((next_tel - self.clock.now()).total_seconds(), 1.0))
            self.clock.wait(self._stop, wait)

    def alive(self) -> bool:
        """Whether every thread that must run is running: the uplink's and every component's."""
        return self.supervisor.alive()

    def stop(self, timeout: float = 4.0) -> None:
        """Stop devices, tell the bureau we go offline on purpose, and flush what we can."""
        # A restart (a new config) is a reload to systemd: STOPPING=1 would make it wait for the exit.
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
               if self.restart_reason else "STOPPING=1")
        self._stop.set()
        self.supervisor.stop_all()
        offline = None
        try:
            offline = self.publish_status("offline")
        except Exception:
            log.exception("could not store the offline status")
        # While the link is up, use the few seconds systemd gives us to flush the backlog too;
        # whatever is left stays in the outbox for the next start.
        row = offline.row_id if offline else None
        self.uplink.stop(timeout=timeout, drain=lambda: (row is None or not self.outbox.contains(row))
                         and self.outbox.depth() == 0)
        for thread in self._threads:
            thread.join(1.0)
        self.outbox.close()
        self.archive.close()
        log.info("edge-agent stopped")

    def request_restart(self, reason: str) -> None:
        """Stop as on SIGTERM, then `edge-agent run` starts the process again (same PID, same arguments)."""
        log.warning("restart requested: %s", reason)
        self.restart_reason = reason
        self._run_stop.set()

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT (or `request_restart`); returns the process exit code."""
        stop = self._run_stop

        def _on_signal(signum: int, frame: Any) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            stop.set()

        def _on_hup(signum: int, frame: Any) -> None:
            log.info("SIGHUP: reloading what can be reloaded without a restart")
            for callback in self._reloads:
                try:
                    callback()
                except Exception:
                    log.exception("reload failed")

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGHUP, _on_hup)
        self.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            self.stop()
        return 0


@dataclass
class _HeldMinute:
    """A minute of telemetry not yet in both the outbox and the on-site archive."""

    end: datetime
    body: dict[str, Any]
    message: Message | None = None  # set once the outbox has it


class _UplinkThread:
    """The uplink as the supervisor sees it: restarted when its thread dies, started and stopped by the agent."""

    name = "uplink"

    def __init__(self, uplink: MqttUplink):
        self.uplink = uplink

    def start(self) -> None:
        self.uplink.start()

    def stop(self) -> None:
        pass  # its thread is already gone; the agent's own stop drains and disconnects

    def alive(self) -> bool:
        return self.uplink.alive()

    def health(self) -> dict[str, Any]:
        return self.uplink.health.as_dict()


def _next_boundary(now: datetime, interval_s: int) -> datetime:
    """The next multiple of interval_s since the epoch, so minutes end on :00."""
    epoch = now.astimezone(timezone.utc).timestamp()
    return datetime.fromtimestamp((epoch // interval_s + 1) * interval_s, timezone.utc)
