"""The microphone's calibration file, as `edge-fw calibrate-mic` writes it.

A JSON object: `full_scale_db` (dB SPL of a full-scale sine, measured against an acoustic
calibrator), `ref_db` (the calibrator's level), `measured_dbfs`, `frequency_hz`, `time`. The
field tool writes it without importing the daemon (firmware_tools imports drivers only);
a test holds the two sides together. A file that cannot be read is not fatal: the meter
falls back to the configured `full_scale_db` and its health says why.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    full_scale_db: float
    ref_db: float
    time: str


def load_calibration(path: Path) -> tuple[Calibration | None, str]:
    """The calibration at `path` and "" — or None and why not ("" when there is simply none yet)."""
    if not path.exists():
        return None, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        full_scale = float(data["full_scale_db"])
        if not math.isfinite(full_scale) or not 60.0 <= full_scale <= 200.0:
            raise ValueError(f"full_scale_db {full_scale} is outside 60..200 dB")
        return Calibration(full_scale, float(data.get("ref_db", math.nan)), str(data.get("time", ""))), ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"calibration file {path} is unusable ({exc}); using the configured full_scale_db"
        log.error("microphone: %s", reason)
        return None, reason
