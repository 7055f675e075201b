"""Announcement clips: Mandarin text rendered to WAV by espeak-ng (cached), or a technician's WAV.

Rendering happens once per (text, voice, rate): the WAV is kept in a cache directory under
a hash of those, so a restart, or a bureau shout repeating an earlier text, costs no
synthesis and adds no delay before the speaker starts. All clips are loaded and checked at
start; one that fails is logged and reported, and the others still play. A recording that
cannot be read falls back to the synthesised text, so the crew still hears the message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from drivers.speaker import Pcm, SpeakerError, load_wav
from edge_agent.config.actions import ClipConfig

log = logging.getLogger(__name__)

ESPEAK = "espeak-ng"
CACHE_FORMAT = 1  # bump when the rendering command changes, so old cache files are not reused
RENDER_TIMEOUT_S = 20.0
MAX_SHOUT_CHARS = 500


class ClipError(Exception):
    """A clip cannot be produced; the message says why, for a technician."""


@dataclass(frozen=True)
class Clip:
    """A clip ready to play, with the repeat pattern its config asks for."""

    id: str
    text: str  # what it says, for people (logs, events)
    pcm: Pcm
    source: str  # "tts" or "wav"
    path: Path  # the WAV file it came from (cache file or the technician's)
    repeats: int = 1
    gap_s: float = 0.0


def cache_key(text: str, voice: str, rate_wpm: int) -> str:
    blob = json.dumps([CACHE_FORMAT, text, voice, rate_wpm], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def render_tts(text: str, voice: str, rate_wpm: int, cache_dir: Path) -> Path:
    """The cached WAV for `text`, rendering it with espeak-ng first if needed."""
    text = text.strip()
    if not text:
        raise ClipError("nothing to say: the text is empty")
    path = cache_dir / f"{cache_key(text, voice, rate_wpm)}.wav"
    if path.is_file():
        return path
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise ClipError("espeak-ng is not installed (apt-get install espeak-ng), so texts cannot be spoken")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".render-", suffix=".wav", dir=cache_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # The text goes in on stdin, so one starting with '-' is never taken for an option.
        result = subprocess.run([exe, "-v", voice, "-s", str(rate_wpm), "-w", str(tmp), "--stdin"],
                                input=text.encode("utf-8"), capture_output=True, timeout=RENDER_TIMEOUT_S)
        if result.returncode != 0 or tmp.stat().st_size <= 44:
            err = result.stderr.decode("utf-8", "replace").strip() or f"exit status {result.returncode}"
            raise ClipError(f"espeak-ng -v {voice} failed: {err}")
        load_wav(tmp)  # refuse to cache something that will not play
        os.replace(tmp, path)
    except subprocess.TimeoutExpired as exc:
        raise ClipError(f"espeak-ng took longer than {RENDER_TIMEOUT_S:.0f} s") from exc
    except SpeakerError as exc:
        raise ClipError(f"espeak-ng wrote an unusable file: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("rendered %r with espeak-ng -v %s into %s", text[:40], voice, path.name)
    return path


class ClipLibrary:
    """The configured clips, loaded once at start; texts for shouts are rendered on demand."""

    def __init__(self, clips: Mapping[str, ClipConfig], *, voice: str, rate_wpm: int, cache_dir: Path):
        self.configs = dict(clips)
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.cache_dir = cache_dir
        self._clips: dict[str, Clip] = {}
        self._problems: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self) -> dict[str, str]:
        """Render or read every clip; returns the problems by clip id (also kept for health)."""
        clips: dict[str, Clip] = {}
        problems: dict[str, str] = {}
        for clip_id, cfg in self.configs.items():
            try:
                clips[clip_id], note = self._build(clip_id, cfg)
                if note:
                    problems[clip_id] = note
            except ClipError as exc:
                problems[clip_id] = str(exc)
                log.error("clip %s cannot be played: %s", clip_id, exc)
        with self._lock:
            self._clips, self._problems = clips, problems
        log.info("clips ready: %d of %d", len(clips), len(self.configs))
        return dict(problems)

    def _build(self, clip_id: str, cfg: ClipConfig) -> tuple[Clip, str]:
        note = ""
        if cfg.wav is not None:
            try:
                return Clip(clip_id, cfg.text, load_wav(cfg.wav), "wav", cfg.wav, cfg.repeats, cfg.gap_s), ""
            except SpeakerError as exc:
                note = f"recording unusable, speaking the text instead: {exc}"
                log.error("clip %s: %s", clip_id, note)
        path = render_tts(cfg.tts_text or cfg.text, self.voice, self.rate_wpm, self.cache_dir)
        try:
            pcm = load_wav(path)
        except SpeakerError as exc:  # a damaged cache file: render it afresh once
            path.unlink(missing_ok=True)
            path = render_tts(cfg.tts_text or cfg.text, self.voice, self.rate_wpm, self.cache_dir)
            try:
                pcm = load_wav(path)
            except SpeakerError:
                raise ClipError(str(exc)) from exc
        return Clip(clip_id, cfg.text, pcm, "tts", path, cfg.repeats, cfg.gap_s), note

    def get(self, clip_id: str) -> Clip | None:
        with self._lock:
            return self._clips.get(clip_id)

    def speak_text(self, text: str, *, repeats: int = 1, gap_s: float = 2.0) -> Clip:
        """A clip for free text (a bureau shout); its id is derived from the text, for de-duplication."""
        text = text.strip()
        if len(text) > MAX_SHOUT_CHARS:
            raise ClipError(f"text too long: {len(text)} characters, at most {MAX_SHOUT_CHARS}")
        path = render_tts(text, self.voice, self.rate_wpm, self.cache_dir)
        try:
            pcm = load_wav(path)
        except SpeakerError as exc:
            path.unlink(missing_ok=True)
            raise ClipError(str(exc)) from exc
        return Clip(f"text:{path.stem[:12]}", text, pcm, "tts", path, repeats, gap_s)

    def health(self) -> dict[str, object]:
        with self._lock:
            return {"ready": sorted(self._clips), "problems": dict(self._problems)}
