"""Which noise it was: YAMNet's AudioSet classes over the microphone's audio, summed up per minute.

A microphone listener resamples to 16 kHz, cuts 0.975-s windows (YAMNet's input), brings
each window to a fixed RMS (YAMNet misreads quiet input: its log-mel has a fixed offset),
and keeps, per wall-clock minute, the energy-weighted sums of the 521 scores and of the
group shares. Energy-weighted, because the question is which source made the *level*: a
loud jackhammer second outweighs a quiet minute of talk.

Groups (construction, traffic, aircraft, speech, music; configurable) take, per window, the
highest score among their classes; the group shares are those maxima divided by their sum.
A window in which no group scores at least `MIN_EVIDENCE` is `unattributed`.

YAMNet's front end sees 125–7,500 Hz only: the low-frequency share (LZeq − LAeq, from the
level meter) is reported beside the classes by the component, not here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import signal

from drivers.microphone import AudioBlock
from edge_agent.sound.labels import MODELS, load_labels

log = logging.getLogger(__name__)

CARD = MODELS / "yamnet.yaml"
RATE = 16000
WINDOW = 15600  # 0.975 s
MIN_EVIDENCE = 0.1  # a window whose best group scores less than this says nothing about the source
GROUPS: dict[str, tuple[str, ...]] = {  # AudioSet display names (yamnet_class_map.csv)
    "construction": ("Tools", "Hammer", "Jackhammer", "Sawing", "Filing (rasp)", "Sanding", "Power tool", "Drill",
                     "Chainsaw", "Engine", "Medium engine (mid frequency)", "Heavy engine (low frequency)",
                     "Engine knocking", "Engine starting", "Idling", "Reversing beeps", "Clang"),
    "traffic": ("Vehicle", "Motor vehicle (road)", "Car", "Car passing by", "Truck", "Bus", "Motorcycle",
                "Traffic noise, roadway noise", "Vehicle horn, car horn, honking", "Air horn, truck horn",
                "Tire squeal", "Skidding", "Rail transport", "Train"),
    "aircraft": ("Aircraft", "Aircraft engine", "Jet engine", "Propeller, airscrew", "Helicopter",
                 "Fixed-wing aircraft, airplane"),
    "speech": ("Speech", "Conversation", "Child speech, kid speaking", "Hubbub, speech noise, speech babble",
               "Shout", "Yell"),
    "music": ("Music", "Musical instrument"),
}


class ClassifierError(Exception):
    """The model or its labels cannot be used; the message says why."""


class Yamnet:
    """The shipped YAMNet, checked against its card, one interpreter (one caller at a time)."""

    def __init__(self, card: Path = CARD, threads: int = 1):
        from detectors.backbone import ModelError, open_interpreter

        try:
            meta = yaml.safe_load(card.read_text(encoding="utf-8"))
            model_path = card.with_name(meta["file"])
            model = model_path.read_bytes()
            labels_path = card.with_name(meta["labels_file"])
            labels_bytes = labels_path.read_bytes()
        except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
            raise ClassifierError(f"YAMNet card {card}: {exc}") from exc
        if hashlib.sha256(model).hexdigest() != meta["sha256"]:
            raise ClassifierError(f"{model_path} does not match its card's sha256")
        if hashlib.sha256(labels_bytes).hexdigest() != meta["labels_sha256"]:
            raise ClassifierError(f"{labels_path} does not match its card's sha256")
        self.labels = load_labels(labels_path)
        try:
            self._interp = open_interpreter(f"YAMNet {model_path}", threads, content=model)
        except ModelError as exc:
            raise ClassifierError(str(exc)) from exc
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        if [int(v) for v in inp["shape"]] != [WINDOW] or int(np.prod(out["shape"])) != len(self.labels):
            raise ClassifierError(f"{model_path}: unexpected shapes {inp['shape']} -> {out['shape']}")
        self._in, self._out = inp["index"], out["index"]
        self._lock = threading.Lock()

    def scores(self, window: np.ndarray) -> np.ndarray:
        """521 scores in 0..1 for 15,600 samples of 16 kHz audio in [-1, 1]."""
        with self._lock:
            self._interp.set_tensor(self._in, np.ascontiguousarray(window, dtype=np.float32))
            self._interp.invoke()
            return np.array(self._interp.get_tensor(self._out), dtype=np.float32).reshape(-1)


class To16k:
    """Streaming resampler to 16 kHz: an 8th-order low-pass and decimation for multiples of 16 kHz,
    polyphase resampling per block otherwise (small seams between blocks: fine for classification)."""

    def __init__(self, rate: int):
        self.rate = rate
        self.factor = rate // RATE if rate % RATE == 0 else 0
        if self.factor > 1:
            self.sos = signal.butter(8, 7200, fs=rate, output="sos")
            self.zi = np.zeros((self.sos.shape[0], 2))
            self.phase = 0
        g = math.gcd(rate, RATE)
        self.up, self.down = RATE // g, rate // g

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.factor == 1:
            return np.asarray(x, dtype=np.float64)
        if self.factor > 1:
            y, self.zi = signal.sosfilt(self.sos, x, zi=self.zi)
            out = y[self.phase::self.factor]
            self.phase = (self.phase - len(x)) % self.factor
            return np.asarray(out)
        return np.asarray(signal.resample_poly(x, self.up, self.down))


@dataclass(frozen=True)
class Attribution:
    """What was heard over a stretch of time."""

    windows: int
    top: list[tuple[str, float]]  # class, energy-weighted mean score
    shares: dict[str, float]  # group -> share of the sound energy (plus "unattributed")

    @property
    def likely(self) -> str:
        return max(self.shares.items(), key=lambda kv: kv[1])[0] if self.shares else "unattributed"

    def as_json(self) -> dict[str, Any]:
        return {"windows": self.windows, "likely": self.likely,
                "top": [{"class": c, "score": round(s, 3)} for c, s in self.top],
                "shares": {g: round(s, 3) for g, s in self.shares.items()}}


class _Minute:
    __slots__ = ("scores", "shares", "weight", "windows")

    def __init__(self, classes: int, groups: int):
        self.weight = 0.0
        self.scores = np.zeros(classes)
        self.shares = np.zeros(groups + 1)  # last: unattributed
        self.windows = 0


class SourceClassifier:
    """A microphone listener: per-window classes, per-minute sums, attribution over any recent stretch."""

    def __init__(self, model: Yamnet, rate: int, groups: Mapping[str, Sequence[str]] | None = None, *,
                 hop_s: float = 0.975, target_dbfs: float = -20.0, max_gain_db: float = 40.0,
                 keep_minutes: int = 61, top_n: int = 5):
        self.model = model
        self.groups = dict(groups or GROUPS)
        index = {name: i for i, name in enumerate(model.labels)}
        unknown = [c for members in self.groups.values() for c in members if c not in index]
        if unknown:
            raise ClassifierError(f"unknown AudioSet class name(s): {', '.join(map(repr, unknown))}")
        self._members = [np.array([index[c] for c in members]) for members in self.groups.values()]
        self.resample = To16k(rate)
        self.rate = rate
        self.hop = max(1, min(WINDOW, round(hop_s * RATE)))
        self.target_rms = 10 ** (target_dbfs / 20) * math.sqrt(0.5)  # dB re full-scale sine
        self.max_gain = 10 ** (max_gain_db / 20)
        self.keep_minutes = keep_minutes
        self.top_n = top_n
        self._buf = np.zeros(0)
        self._buf_start: datetime | None = None
        self._minutes: OrderedDict[int, _Minute] = OrderedDict()
        self._lock = threading.Lock()
        self.windows = 0
        self.last_ms = 0.0

    def __call__(self, block: AudioBlock) -> None:
        y = self.resample(block.samples.astype(np.float64))
        if self._buf_start is None or len(self._buf) == 0:
            self._buf_start = block.start - timedelta(seconds=len(self._buf) / RATE)
        self._buf = np.concatenate([self._buf, y])
        while len(self._buf) >= WINDOW:
            assert self._buf_start is not None
            self.classify(self._buf[:WINDOW], self._buf_start)
            self._buf = self._buf[self.hop:]
            self._buf_start += timedelta(seconds=self.hop / RATE)

    def classify(self, window: np.ndarray, start: datetime) -> np.ndarray:
        """Classify one window (16 kHz) that began at `start`, and add it to its minute."""
        import time

        x = window - float(np.mean(window))
        ms = float(np.mean(np.square(x)))
        rms = math.sqrt(ms)
        gain = min(self.max_gain, self.target_rms / rms) if rms > 0 else 1.0
        t0 = time.perf_counter()
        scores = self.model.scores(np.clip(x * gain, -1.0, 1.0))
        self.last_ms = (time.perf_counter() - t0) * 1000
        group = np.array([float(scores[m].max()) for m in self._members])
        shares = np.zeros(len(group) + 1)
        if group.max() < MIN_EVIDENCE:
            shares[-1] = 1.0
        else:
            shares[:-1] = group / group.sum()
        weight = max(ms, 1e-20)
        minute = int((start + timedelta(seconds=WINDOW / RATE / 2)).timestamp() // 60)
        with self._lock:
            acc = self._minutes.get(minute)
            if acc is None:
                acc = self._minutes[minute] = _Minute(len(scores), len(group))
                while len(self._minutes) > self.keep_minutes:
                    self._minutes.popitem(last=False)
            acc.weight += weight
            acc.scores += weight * scores
            acc.shares += weight * shares
            acc.windows += 1
            self.windows += 1
        return scores

    def attribution(self, since: datetime, until: datetime) -> Attribution | None:
        """Over the whole minutes that overlap [since, until); None if nothing was classified there."""
        first, last = int(since.timestamp() // 60), int(until.timestamp() // 60)
        with self._lock:
            picked = [acc for m, acc in self._minutes.items() if first <= m <= last]
            if not picked:
                return None
            weight = sum(a.weight for a in picked)
            scores = sum((a.scores for a in picked), np.zeros_like(picked[0].scores)) / weight
            shares = sum((a.shares for a in picked), np.zeros_like(picked[0].shares)) / weight
            windows = sum(a.windows for a in picked)
        order = np.argsort(-scores)[: self.top_n]
        names = [*self.groups, "unattributed"]
        return Attribution(windows, [(self.model.labels[i], float(scores[i])) for i in order],
                           {n: float(s) for n, s in zip(names, shares, strict=True)})
