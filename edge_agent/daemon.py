"""Builds the agent from a config: which components run depends on which sections exist."""

from __future__ import annotations

import logging

from drivers.types import Reading
from edge_agent.actions import Actions
from edge_agent.app import Agent
from edge_agent.config import AgentConfig
from edge_agent.evidence.bundle import open_store
from edge_agent.figures import FiguresService
from edge_agent.history import ReadingHistory
from edge_agent.measures import MeasureEngine
from edge_agent.meters import MetersComponent
from edge_agent.remote import action_handlers, build_dispatcher
from edge_agent.rules import RuleEngine, Schedule
from edge_agent.uplink.topics import Topics
from edge_agent.violations import EvidenceWorker, ViolationHandler

log = logging.getLogger(__name__)


def build_agent(config: AgentConfig) -> Agent:
    agent = Agent(config)
    tz = config.site.timezone
    schedule = Schedule(config.schedule, tz)
    engine = MeasureEngine(timezone=config.schedule.timezone or tz,
                           night_windows=[(w.start, w.end) for w in config.schedule.night],
                           validity=config.rules.figure_validity)
    rules = RuleEngine(config.rules, schedule)
    history = ReadingHistory()
    handler = ViolationHandler(agent)
    rules.subscribe(handler)
    agent.history = history  # type: ignore[attr-defined]
    agent.violations = handler  # type: ignore[attr-defined]

    actions = Actions.from_config(config)
    agent.add_component(actions)
    agent.actions = actions  # type: ignore[attr-defined]
    handler.local_actions.append(actions.on_violation)

    evidence = EvidenceWorker(open_store(config, now=agent.now), history,
                              agent.publish if config.evidence.publish else None,
                              config.evidence.readings_window_s)
    agent.add_component(evidence)
    agent.evidence = evidence  # type: ignore[attr-defined]
    handler.evidence = evidence

    # Bureau commands: verified, then carried out by the speaker and relays; acks upward.
    dispatcher = build_dispatcher(config, agent.publish, now=agent.now)
    for name, command in action_handlers(actions).items():
        dispatcher.register(name, command)
    agent.add_component(dispatcher)
    agent.commands = dispatcher  # type: ignore[attr-defined]
    agent.uplink.subscribe(Topics.CMD, dispatcher.on_message)

    reading_sinks = [history.add, rules.on_reading]

    hj212 = None
    if config.hj212 is not None:
        from edge_agent.hj212.client import Hj212Uplink

        hj212 = Hj212Uplink(config.hj212, config.storage.data_dir, fsync=config.storage.fsync)
        reading_sinks.append(hj212.on_reading)

    def on_reading(reading: Reading) -> None:
        for sink in reading_sinks:
            try:
                sink(reading)
            except Exception:
                log.exception("reading consumer failed")

    meters = MetersComponent(list(config.meters), engine, on_reading=on_reading)
    agent.add_component(_Named("meters", meters))
    figures = FiguresService(engine, rules, tz, device_health=meters.health)
    agent.add_component(figures)
    agent.figures = figures  # type: ignore[attr-defined]
    interval = config.telemetry.interval_s
    agent.add_telemetry("figures", lambda end: figures.telemetry(end, interval))
    if hj212 is not None:
        figures.on_period(hj212.on_period)
        agent.add_component(_Named("hj212", hj212))

    if any(cam.enabled for cam in config.cameras):
        from edge_agent.video.cameras import CamerasComponent
        from edge_agent.vision import CameraEvidence, Vision, snapshot_command

        vision = Vision(config, handler)
        cameras = CamerasComponent(config.cameras, tz, on_frame=vision.on_frame, on_violation=handler,
                                   site=config.site.id, device=config.device.id,
                                   clip_dir=agent.data_dir / "clips")
        agent.add_component(cameras)
        agent.add_component(vision)
        agent.cameras = cameras  # type: ignore[attr-defined]
        agent.vision = vision  # type: ignore[attr-defined]
        evidence.media.append(CameraEvidence(cameras, cameras.camera_ids()))
        dispatcher.register("snapshot", snapshot_command(cameras, evidence.store,
                                                         agent.publish if config.evidence.publish else None))
    return agent


class _Named:
    """Gives a component without a `name` one, for status and logs."""

    def __init__(self, name: str, inner: object):
        self.name = name
        self.inner = inner

    def start(self) -> None:
        self.inner.start()  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.inner.stop()  # type: ignore[attr-defined]

    def health(self) -> dict[str, object]:
        return dict(self.inner.health())  # type: ignore[attr-defined]
