"""Data that flows inside the core: figures computed from readings, and what leaves the box."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class Publish(Protocol):
    """Store a message for the bureau (durably, through the outbox) under a topic leaf."""

    def __call__(self, leaf: str, payload: bytes | Mapping[str, Any], *, kind: str) -> object: ...


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


Outline = tuple[tuple[float, float], ...]  # a polygon in normalised image coordinates (0..1)


@dataclass(frozen=True)
class Seen:
    """What a camera saw behind a violation: outlined on the evidence snapshot, crops in the bundle."""

    camera: str
    label: str
    outlines: tuple[Outline, ...] = ()
    images: Mapping[str, Any] = field(default_factory=dict)  # name -> JPEG bytes (or a BGR ndarray)


@dataclass(frozen=True)
class Violation:
    """A state change of one rule breach: `started`, `ongoing` (periodic), `ended`.

    `key` identifies one occurrence across its life cycle (same key from start to end), so
    the bureau can join the three messages; `figures` are the numbers that prove it.
    """

    kind: str  # noise_over_limit, noise_early_warning, night_lmax, night_work, dust_over_limit,
    # bare_soil, unwashed_vehicle, black_smoke, camera_tamper, device_fault
    state: str  # started, ongoing, ended
    key: str
    time: datetime  # UTC, when this state was reached
    started: datetime  # UTC, when the occurrence began
    source: str  # sensor or camera id
    figures: dict[str, float | str | None]
    message: str = ""  # one line for people, in the crew's language where it is spoken
    seen: Seen | None = field(default=None, compare=False, repr=False)  # for evidence, never published
    # Over as soon as it is seen (a truck that left unwashed, an uncovered load): `started` and
    # `ended` come together, and the `ended` must not withdraw the warning the crew is owed.
    moment: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "state": self.state,
            "key": self.key,
            "started": self.started.isoformat(),
            "source": self.source,
            "figures": self.figures,
            "message": self.message,
        }
