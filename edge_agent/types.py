"""Data that flows inside the core: figures computed from readings, and what leaves the box."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Measure:
    """A legal figure over a window, e.g. the 20-minute LAeq or the 1-hour TSP mean."""

    sensor_id: str
    quantity: str  # noise_la, tsp, pm10, ...
    window_s: int  # 60, 300, 1200, 3600, ...
    figure: str  # leq, lmax, lmin, l10, l50, l90, avg, ...
    value: float | None  # None when too few valid samples
    unit: str
    end: datetime  # UTC end of the window
    samples: int  # valid samples the figure rests on
    invalid: int = 0  # samples left out (comm error, out of range, ...)
    valid: bool = True  # False when the validity rule (e.g. >= 75 % valid) fails

    def to_json(self) -> dict[str, object]:
        return {
            "sensor": self.sensor_id,
            "quantity": self.quantity,
            "window_s": self.window_s,
            "figure": self.figure,
            "value": None if self.value is None else round(self.value, 3),
            "unit": self.unit,
            "end": self.end.isoformat(),
            "samples": self.samples,
            "invalid": self.invalid,
            "valid": self.valid,
        }
