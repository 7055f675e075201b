"""The component named "microphone": capture, the level meter, and its readings into the core.

Every second of audio becomes one `Reading` (sensor `mic-1`, quantity `noise_la`, the 1-s
LAeq in dB(A)) handed to the core's queue like a Modbus meter's, so the figures, rules and
HJ 212 cannot tell the microphone from an RS-485 meter. A second with clipped samples is
`out_of_range` (the level under-reads), a second of digital silence `comm_error`: both are
left out of the legal figures and counted, as a meter's faults are. The reading is stamped
at the middle of its second, so it falls in the right minute block.

The per-second levels (LAeq, LCeq, LZeq, LAFmax, LCpeak) are also kept for an hour: the
source attribution and the evidence read them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from drivers.microphone import CLIP_LEVEL, SILENCE_RMS, AudioBlock, Microphone
from drivers.types import Quality, Reading
from edge_agent.config.microphone import MicrophoneConfig
from edge_agent.evidence.bundle import EvidenceFile
from edge_agent.sound.calibration import load_calibration
from edge_agent.sound.classifier import ClassifierError, SourceClassifier, Yamnet
from edge_agent.sound.meter import LevelMeter, Levels, energy_mean_db
from edge_agent.sound.ring import AudioRing, AudioRingError
from edge_agent.types import Violation

log = logging.getLogger(__name__)

KEEP_S = 3600


class LevelReadings:
    """A microphone listener: the meter, and one Reading per second for the core."""

    def __init__(self, rate: int, full_scale_db: float, sensor_id: str, quantity: str,
                 submit: Callable[[Reading], None]):
        self.meter = LevelMeter(rate, full_scale_db)
        self.sensor_id = sensor_id
        self.quantity = quantity
        self.submit = submit
        self.rate = rate
        self._clipped = 0
        self._silent = True
        self._lock = threading.Lock()
        self.levels: deque[Levels] = deque(maxlen=KEEP_S)
        self.counts = {"ok": 0, "clipped": 0, "silent": 0}

    def __call__(self, block: AudioBlock) -> None:
        if block.rate != self.rate:  # the device reopened at another rate: start over
            log.warning("microphone rate changed from %d to %d Hz: meter restarted", self.rate, block.rate)
            self.meter = LevelMeter(block.rate, self.meter.full_scale_db)
            self.rate = block.rate
        x = block.samples
        pos = 0
        interval = self.meter.interval
        while pos < len(x):  # split at the meter's second boundaries to know which second clipped
            take = min(interval - self.meter.pending, len(x) - pos)
            part = x[pos:pos + take]
            self._clipped += int(np.count_nonzero(np.abs(part) >= CLIP_LEVEL))
            if self._silent and part.size and float(np.sqrt(np.mean(np.square(part, dtype=np.float64)))) >= SILENCE_RMS:
                self._silent = False
            for lv in self.meter.feed(part, block.start + timedelta(seconds=pos / block.rate)):
                self._emit(lv)
            pos += take

    def _emit(self, lv: Levels) -> None:
        assert lv.start is not None
        when = lv.start + timedelta(seconds=lv.seconds / 2)
        if self._silent:
            quality, value, kind = Quality.COMM_ERROR, None, "silent"
        elif self._clipped:
            quality, value, kind = Quality.OUT_OF_RANGE, round(lv.laeq, 1), "clipped"
        else:
            quality, value, kind = Quality.OK, round(lv.laeq, 1), "ok"
        self._clipped, self._silent = 0, True
        with self._lock:
            self.levels.append(lv)
            self.counts[kind] += 1
        self.submit(Reading(self.sensor_id, self.quantity, value, "dB(A)", when, quality))

    def recent(self, since: datetime) -> list[Levels]:
        """The per-second levels whose second started at or after `since`."""
        with self._lock:
            return [lv for lv in self.levels if lv.start is not None and lv.start >= since]

    def last(self) -> Levels | None:
        with self._lock:
            return self.levels[-1] if self.levels else None


class SoundComponent:
    """The microphone and what listens to it."""

    name = "microphone"

    def __init__(self, config: MicrophoneConfig, data_dir: Path, submit: Callable[[Reading], None],
                 now: Callable[[], datetime]):
        self.config = config
        cal_path = config.calibration_path(data_dir)
        calibration, self.calibration_error = load_calibration(cal_path)
        self.calibration = calibration
        self.full_scale_db = calibration.full_scale_db if calibration else config.full_scale_db
        self.mic = Microphone(config.device, config.sample_rate, block_s=config.block_ms / 1000,
                              channel=config.channel, retry_s=config.retry_s, dead_after_s=config.dead_after_s,
                              sample_format=config.sample_format, now=now)
        self.levels = LevelReadings(config.sample_rate, self.full_scale_db, config.sensor_id, config.quantity, submit)
        self.mic.add_listener(self.levels)
        self.classifier: SourceClassifier | None = None
        self.classifier_error = ""
        self.ring: AudioRing | None = None
        self.ring_error = ""
        if config.audio.enabled:
            try:
                self.ring = AudioRing(config.sample_rate, config.audio.ring_s, config.audio.bitrate)
                self.mic.add_listener(self.ring)
            except Exception as exc:  # no libopus in this PyAV build, ...: the meter works without it
                self.ring_error = f"audio ring unavailable: {exc}"
                log.error("microphone: %s", self.ring_error)
        cc = config.classifier
        if cc.enabled:
            try:
                model = Yamnet(threads=cc.threads)
                self.classifier = SourceClassifier(model, config.sample_rate, cc.groups, hop_s=cc.hop_s,
                                                   target_dbfs=cc.target_dbfs, max_gain_db=cc.max_gain_db)
                self.mic.add_listener(self.classifier)
            except (ClassifierError, OSError) as exc:  # the meter works without it
                self.classifier_error = f"noise source classifier unavailable: {exc}"
                log.error("microphone: %s", self.classifier_error)
        if config.sample_rate < 44100:
            log.warning("microphone at %d Hz: the weighting cannot be measured up to 16 kHz (class 1 needs "
                        ">= 44.1 kHz)", config.sample_rate)

    def start(self) -> None:
        self.mic.start()
        log.info("microphone: %s as %s/%s, full scale %.1f dB SPL (%s)", self.mic.device or "default input",
                 self.config.sensor_id, self.config.quantity, self.full_scale_db,
                 "calibrated " + self.calibration.time if self.calibration else "not calibrated")

    def stop(self) -> None:
        self.mic.stop()

    def alive(self) -> bool:
        return self.mic.alive()

    def health(self) -> dict[str, Any]:
        h: dict[str, Any] = dict(self.mic.health())
        last = self.levels.last()
        h["laeq_1s"] = round(last.laeq, 1) if last is not None else None
        h["seconds_by_quality"] = dict(self.levels.counts)
        h["full_scale_db"] = self.full_scale_db
        h["calibration"] = ({"offset_db": round(self.full_scale_db - self.config.full_scale_db, 2),
                             "time": self.calibration.time} if self.calibration else None)
        if self.calibration_error:
            h["calibration_error"] = self.calibration_error
        if self.classifier is not None:
            h["classified_windows"] = self.classifier.windows
            h["classifier_ms"] = round(self.classifier.last_ms, 2)
        elif self.classifier_error:
            h["classifier_error"] = self.classifier_error
        if self.ring is not None:
            h["audio_ring"] = self.ring.health()
        elif self.ring_error:
            h["audio_ring"] = {"error": self.ring_error}
        return h

    def evidence(self, violation: Violation) -> list[EvidenceFile]:
        """An evidence media source: `audio.ogg` of a noise violation's window (its last evidence_max_s)."""
        cfg = self.config.audio
        if self.ring is None or not cfg.evidence or violation.kind not in NOISE_KINDS:
            return []
        window = min(float(violation.figures.get("window_s") or 60.0), float(cfg.evidence_max_s))
        try:
            data, _, _ = self.ring.ogg(violation.time - timedelta(seconds=window), violation.time)
        except AudioRingError as exc:
            log.warning("evidence audio for %s: %s", violation.key, exc)
            return []
        return [EvidenceFile("audio.ogg", data, media_type="audio/ogg; codecs=opus")]

    def device_health(self) -> dict[str, dict[str, object]]:
        """For the device_fault rule: a dead (silent) microphone is as down as an absent one."""
        h = self.mic.health()
        state = "down" if h["state"] in ("down", "dead") else "ok"
        return {self.config.sensor_id: {"state": state, "last_error": h["last_error"] or ""}}

    # --- which noise it was ----------------------------------------------------------------------

    def attribution(self, since: datetime, until: datetime) -> dict[str, Any] | None:
        """The likely source over [since, until): classes, group shares, and the low-frequency share
        (LZeq − LAeq: what YAMNet, deaf below 125 Hz, cannot weigh). None if nothing was measured."""
        levels = [lv for lv in self.levels.recent(since) if lv.start is not None and lv.start < until]
        att = self.classifier.attribution(since, until) if self.classifier is not None else None
        if not levels and att is None:
            return None
        out: dict[str, Any] = att.as_json() if att is not None else {}
        if levels:
            w = [lv.seconds for lv in levels]
            laeq = energy_mean_db([lv.laeq for lv in levels], w)
            out["laeq"] = round(laeq, 1)
            out["low_frequency_db"] = round(energy_mean_db([lv.lzeq for lv in levels], w) - laeq, 1)
        return out

    def construction_share(self, now: datetime, window_s: float) -> float | None:
        """For the night rule: the construction share over the window; None when not classified."""
        if self.classifier is None:
            return None
        att = self.classifier.attribution(now - timedelta(seconds=window_s), now)
        return att.shares.get("construction") if att is not None else None

    def enrich(self, violation: Violation) -> Violation:
        """A noise violation gets the likely source of its window in its figures (scalars, for every
        consumer of figures: the bureau, HJ 212, the evidence manifest)."""
        if violation.kind not in NOISE_KINDS or violation.state == "ended":
            return violation
        window = float(violation.figures.get("window_s") or 60.0)
        found = self.attribution(violation.time - timedelta(seconds=window), violation.time)
        if not found:
            return violation
        figures = dict(violation.figures)
        figures.update(source_figures(found))
        return replace(violation, figures=figures)

    def telemetry(self, end: datetime, interval_s: float, limit_db: Callable[[datetime], float]) -> dict[str, Any]:
        """For the telemetry message: the likely source of an interval whose LAeq was over the limit."""
        found = self.attribution(end - timedelta(seconds=interval_s), end)
        if not found or "laeq" not in found:
            return {}
        limit = limit_db(end)
        if found["laeq"] <= limit:
            return {}
        return {"noise_source": {"sensor": self.config.sensor_id, "limit": limit, **found}}


NOISE_KINDS = frozenset({"noise_over_limit", "noise_early_warning", "night_lmax", "night_work"})


def source_figures(found: dict[str, Any]) -> dict[str, float | str | None]:
    """Attribution as flat violation figures: `source_likely`, `source_top`, `source_<group>_share`, ..."""
    out: dict[str, float | str | None] = {}
    if "likely" in found:
        out["source_likely"] = found["likely"]
        out["source_top"] = "; ".join(f"{t['class']} {t['score']:.2f}" for t in found["top"])
        for group, share in found["shares"].items():
            out[f"source_{group}_share"] = share
        out["source_windows"] = found["windows"]
    if "low_frequency_db" in found:
        out["low_frequency_db"] = found["low_frequency_db"]
    return out
