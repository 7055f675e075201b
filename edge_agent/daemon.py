"""Builds the agent from a config: which parts run depends on which sections exist.

Every part gets what it needs as constructor arguments (callables or small protocols),
never the agent itself; the result is `Parts`, a frozen record of everything built, which
`edge-agent run` starts and tests and benches inspect. The only joins made after a part
exists are explicit subscriptions (the uplink's command topic, the cameras' frames and
violations), because those two parts and the vision need each other.

How a reading and a frame travel through these parts is the README's "Architecture".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.types import Reading
from edge_agent.actions import Actions
from edge_agent.actions.announcements import announcement_publisher
from edge_agent.app import Agent
from edge_agent.clock import SYSTEM_CLOCK, Clock, ClockSteps
from edge_agent.command_dispatch import CommandDispatcher, CommandHandler, action_handlers, build_dispatcher
from edge_agent.config import AgentConfig, Problem
from edge_agent.core import Core, ReadingQueue
from edge_agent.evidence.bundle import open_store as open_evidence_store
from edge_agent.fanout import FanOut
from edge_agent.history import ReadingHistory
from edge_agent.measures import MeasureEngine
from edge_agent.measures.figures import ClosedBlock, Figures
from edge_agent.meters import MetersComponent
from edge_agent.retention import VIDEO_TMP_DIR, Janitor
from edge_agent.rules import RuleEngine, Schedule
from edge_agent.types import Violation
from edge_agent.uplink.topics import Topics
from edge_agent.video.activity import ActivityLog
from edge_agent.video.cameras import CamerasComponent
from edge_agent.video.vision import Vision
from edge_agent.violation_store import ViolationStore
from edge_agent.violations import EvidenceWorker, MediaSource, ViolationPath

if TYPE_CHECKING:
    from edge_agent.sound.component import SoundComponent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    """Everything `build_agent` made, typed; `agent` runs them all."""

    agent: Agent
    clock: Clock
    history: ReadingHistory
    engine: MeasureEngine
    rules: RuleEngine
    figures: Figures
    core: Core
    meters: MetersComponent
    actions: Actions
    evidence: EvidenceWorker
    violations: ViolationPath
    commands: CommandDispatcher
    hj212: object | None  # edge_agent.hj212.client.Hj212Uplink, imported only when configured
    cameras: CamerasComponent | None
    vision: Vision | None
    sound: SoundComponent | None = None  # the microphone, when `microphone.enabled`

    def start(self) -> None:
        self.agent.start()

    def stop(self, timeout: float = 4.0) -> None:
        self.agent.stop(timeout)


def build_agent(config: AgentConfig, *, clock: Clock = SYSTEM_CLOCK,
                config_warnings: Sequence[Problem] | None = None, config_path: Path | None = None) -> Parts:
    """`config_warnings`: the loader's, with their lines; by default found again (without lines).
    `config_path`: the file the config came from (`edge-agent run`): the remote `config` command
    replaces it; without it that command is refused."""
    steps = ClockSteps()  # wall-clock steps the core sees: in the status and the next evidence
    agent = Agent(config, clock=clock, steps=steps, config_warnings=config_warnings)
    tz = config.site.timezone

    def elapsed(_now: datetime) -> float:
        return clock.monotonic()

    # The crew first: speaker and relays. A relay whose feedback does not come is a device_fault
    # for the violation path built below (which acts through these same actions): the call is
    # looked up when a fault happens, long after this function has returned.
    violations: ViolationPath
    actions = Actions.from_config(config, report=lambda v: violations.report(v), clock=clock,
                                  on_announced=announcement_publisher(agent.publish, clock.now, tz,
                                                                      lambda clip: actions.clip_text(clip)))

    # Cameras (built before the evidence that takes pictures from them; joined to vision below).
    cameras = None
    if any(cam.enabled for cam in config.cameras):
        cameras = CamerasComponent(config.cameras, tz, site=config.site.id, device=config.device.id,
                                   clip_dir=agent.data_dir / VIDEO_TMP_DIR, state_dir=agent.data_dir / "tamper",
                                   detectors=config.detectors)

    # Evidence: readings behind the figure, pictures from the cameras, signed and chained.
    history = ReadingHistory()
    store = open_evidence_store(config, now=clock.now, clock_steps=steps.take_unreported)
    publish = agent.publish if config.evidence.publish else None
    vision: Vision | None = None
    activity: ActivityLog | None = None
    media: list[MediaSource] = []
    if cameras is not None:
        from detectors.adapted import request_reload
        from edge_agent.video.evidence import CameraEvidence

        media.append(CameraEvidence(cameras))
        activity = ActivityLog()
    # The microphone (built with the readings below) says which noise it was, and gives its sound.
    sound: SoundComponent | None = None
    media.append(lambda v: sound.evidence(v) if sound is not None else [])

    def enrich(v: Violation) -> Violation:
        if activity is not None:
            v = activity.corroborate(v)
        return sound.enrich(v) if sound is not None else v

    # Open violations and owed bundles live on disk: a crash or restart loses neither.
    open_store = ViolationStore(agent.data_dir / "violations.sqlite", fsync=config.storage.fsync)
    evidence = EvidenceWorker(store, history, publish, config.evidence.readings_window_s, media=media,
                              jobs=open_store, clock=clock)

    # One path for every violation, whoever raises it; the cameras back up noise-based night work.
    violations = ViolationPath(act=actions.on_violation, publish=agent.publish, archive=agent.archive,
                               evidence=evidence, store=open_store,
                               enrich=enrich,
                               grace_s=lambda v: recovery_grace_s(config, v), clock=clock)
    report = violations.report

    if cameras is not None:
        vision = Vision(config.cameras, config.detectors, report, activity=activity, clock=clock,
                        adapted_dir=agent.data_dir / "models", model_cache_dir=agent.data_dir / "model-cache")
        agent.on_reload(request_reload)  # SIGHUP: a head installed by `edge-agent adapt` at once
        cameras.subscribe(frames=vision.on_frame, violations=report)

    # Rules and figures, on the core thread.
    schedule = Schedule(config.schedule, tz)
    engine = MeasureEngine(timezone=config.schedule.timezone or tz,
                           night_windows=[(w.start, w.end) for w in config.schedule.night],
                           validity=config.rules.figure_validity)
    rules = RuleEngine(config.rules, schedule, report, elapsed,
                       construction_share=lambda now, window: sound.construction_share(now, window)
                       if sound is not None else None)
    hj212 = None
    if config.hj212 is not None:
        from edge_agent.hj212.client import Hj212Uplink

        hj212 = Hj212Uplink(config.hj212, config.storage.data_dir, clock.now, fsync=config.storage.fsync,
                            archive=agent.archive)
    reading_consumers: list[tuple[str, Callable[[Reading], object]]] = [
        ("history", history.add), ("rules", rules.on_reading)]
    block_consumers: list[tuple[str, Callable[[ClosedBlock], object]]] = [("archive", agent.archive.add_block)]
    if hj212 is not None:
        reading_consumers.append(("hj212", hj212.on_reading))
        block_consumers.append(("hj212", hj212.on_block))
    on_reading = FanOut[Reading]("reading", reading_consumers)
    on_block = FanOut[ClosedBlock]("closed block", block_consumers)

    readings = ReadingQueue()
    meters = MetersComponent(config.meters, engine, readings.submit, clock.now)
    # A measuring microphone: its 1-s LAeq is one more noise meter to the core.
    if config.microphone.enabled:
        from edge_agent.sound.component import SoundComponent  # scipy: loaded only with a microphone

        sound = SoundComponent(config.microphone, agent.data_dir, readings.submit, clock.now)
    janitor = Janitor(config.storage, agent.archive)

    def device_health() -> dict[str, dict[str, object]]:
        """Devices whose `down` becomes a device_fault: each meter, and the data disk once it is too full."""
        low = janitor.storage_low
        disk: dict[str, object] = {"state": "down" if low else "ok",
                "last_error": "data disk below its free-space minimum; only clips can be deleted" if low else ""}
        return {**meters.health(), **(sound.device_health() if sound is not None else {}), "storage": disk}

    figures = Figures(engine, rules, tz, on_block=on_block, report=report, elapsed=elapsed,
                      device_health=device_health)
    core = Core(engine, figures, on_reading, clock, readings, steps)

    # Bureau commands: verified, then carried out by the speaker, the relays, the cameras.
    handlers: dict[str, CommandHandler] = dict(action_handlers(actions, now=clock.now,
                                                               skew_s=config.bureau.clock_skew_s))
    if cameras is not None:
        from edge_agent.video.evidence import relearn_view_command, snapshot_command

        handlers["snapshot"] = snapshot_command(cameras, store, publish)
        handlers["relearn_view"] = relearn_view_command(cameras)
    # Fleet operations: remote config with rollback, model updates, logs, doctor (edge_agent/fleet/).
    from edge_agent.fleet.wiring import attach as attach_fleet

    fleet = attach_fleet(agent, config, handlers, config_path=config_path,
                         warnings=config_warnings if config_warnings is not None else agent.config_warnings)
    # Two-way talk: the bureau's recorded voice on the speaker, the crew's reply from the microphone.
    from edge_agent.voice.wiring import attach_voice

    voice = attach_voice(config, actions, handlers, publish=agent.publish, subscribe=agent.uplink.subscribe,
                         clock=clock, signer=store.signer, microphone=sound.mic if sound is not None else None)
    commands = build_dispatcher(config, agent.publish, clock=clock, handlers=handlers)
    agent.uplink.subscribe(Topics.CMD, commands.on_message)

    interval = config.telemetry.interval_s
    agent.add_telemetry("figures", lambda end: figures.telemetry(end, interval))
    if sound is not None:  # a minute over the limit carries its likely source
        mic, noise = sound, config.rules.noise

        def noise_limit(t: datetime) -> float:
            night = schedule.period(t) == "night"
            return (noise.night_limit_db if night else noise.day_limit_db) + noise.indoor_offset_db

        agent.add_telemetry("sound", lambda end: mic.telemetry(end, interval, noise_limit))
    for component in (janitor, actions, evidence, violations, commands, core, meters,
                      hj212, cameras, vision, sound, voice, *fleet):
        if component is not None:
            agent.add_component(component)
    return Parts(agent=agent, clock=clock, history=history, engine=engine, rules=rules, figures=figures,
                 core=core, meters=meters, actions=actions, evidence=evidence, violations=violations,
                 commands=commands, hj212=hj212, cameras=cameras, vision=vision, sound=sound)


def recovery_grace_s(config: AgentConfig, v: Violation) -> float:
    """How long after a restart a violation that was open may take to be seen again before it is
    ended as `cleared_while_down`: its rule's minimum duration, plus the time its window needs
    to hold enough samples to prove anything, plus a margin."""
    rules = config.rules
    windows: dict[str, tuple[float, float]] = {
        "noise_over_limit": (rules.noise.window_s, rules.noise.timing.min_duration_s),
        "noise_early_warning": (rules.early_warning.window_s, rules.early_warning.timing.min_duration_s),
        "night_work": (rules.night_work.window_s, rules.night_work.timing.min_duration_s),
        "dust_over_limit": (rules.dust.window_s, rules.dust.timing.min_duration_s),
        "dust_early_warning": (rules.dust_early_warning.window_s, rules.dust_early_warning.timing.min_duration_s),
        "night_lmax": (0, rules.night_lmax.timing.min_duration_s),
        "device_fault": (0, 60),
    }
    window, min_duration = windows.get(v.kind, (0, 60))
    return window * rules.figure_validity + min_duration + 60.0
