"""The detector registry: one module adds a detector, its typed parameters and how to build it.

A detector module declares `SPEC = DetectorSpec(...)` at module level. `specs()` imports every
top-level module of this package once and collects those specs, so adding a detector is adding
one file: the config (`detectors:` and each camera's `detectors:` list), the daemon's vision
workers, `edge-agent eval-detector` and `bench/detectors.py` all learn of it from here.

Parameters are a pydantic model per detector with a `type` literal, so the config validates
names and values through the registry (a discriminated union on `type`), and a camera listing
`blak_smoke` is refused with the nearest valid name.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from detectors.types import Detection, Polygon

if TYPE_CHECKING:
    import numpy as np

    from detectors.pool import ModelPool
    from detectors.runtime import Classifier


class DetectorParams(BaseModel):
    """Base of every detector's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    type: str = Field(..., description="Which detector these parameters are for (a registered detector name).")


class ModelParams(DetectorParams):
    """Parameters of a detector that runs a classifier: a site may drop in its own model and card."""

    model: Path | None = Field(
        None, description="The site's own classifier instead of the shipped one: a head (.npz) or a whole "
        ".tflite model, with its card (same name, .yaml) beside it. Heads trained on the box with "
        "`edge-agent adapt` need no entry here: they are picked up from the data dir.",
    )
    threads: int = Field(1, ge=1, le=8, description="LiteRT threads for this detector's models.")


@dataclass(frozen=True)
class CameraView:
    """All a detector may know of its camera: an id and its named zones (normalised polygons)."""

    camera_id: str
    zones: Mapping[str, Polygon] = field(default_factory=dict)


class Detector(Protocol):
    """What the vision workers call: one analysis per frame, detections out."""

    name: str

    def analyse(self, image: np.ndarray, time: datetime, *, motion: float | None = None,
                shared: Any = None) -> list[Detection]: ...


Builder = Callable[[Any, CameraView, "ModelPool"], Detector]


@dataclass(frozen=True)
class ViolationKind:
    """How the core turns a detector's confirmed detections of one kind into a violation.

    A lasting kind (a plume, an uncovered zone) starts at the first confirmed detection and
    ends when confirmations have lapsed for `clear_s`; a moment (a vehicle crossing the exit
    line) is started and ended at once. `text` is the line people read, with `{metric}`
    placeholders filled from the detection's metrics.
    """

    text: str
    moment: bool = False
    clear_s: float = 60.0
    cooldown_s: float = 60.0
    ongoing_every_s: float = 300.0


@dataclass(frozen=True)
class DetectorSpec:
    """How the rest of the box meets one detector.

    `build(params, camera, pool)` makes the per-camera instance; `classifier(params, pool)`
    (optional) gives the image classifier that `eval-detector` measures; `needs_zones(params)`
    names the zones a camera must define for it (config checks warn when they are missing).

    `min_fps` is the slowest analysis rate at which the detector still does its job: a camera
    whose detectors all declare one may analyse keyframes alone when they come at least that
    often, even below its `analysis_fps` (decoding the frames between keyframes is the dearest
    work on the box: drivers/camera/plan.py). None: the detector follows moving things (tracks
    of vehicles crossing a line) and needs frames at the camera's `analysis_fps`, which a
    camera with a long GOP takes from its sub-stream.
    """

    name: str
    params: type[DetectorParams]
    build: Builder
    kinds: tuple[str, ...]  # Detection kinds it emits (violation kinds where they become violations)
    summary: str
    classifier: Callable[[Any, ModelPool], Classifier] | None = None
    needs_zones: Callable[[Any], Sequence[str]] = lambda params: ()
    violations: Mapping[str, ViolationKind] = field(default_factory=dict)  # the kinds that are violations
    min_fps: float | None = None  # keyframes this often suffice; None: needs the camera's analysis_fps

    def default_params(self) -> DetectorParams:
        return self.params(type=self.name)


class UnknownDetector(LookupError):
    """A detector name that no module registers."""


_lock = threading.Lock()
_specs: dict[str, DetectorSpec] | None = None


def specs() -> Mapping[str, DetectorSpec]:
    """Every registered detector by name (imports the package's modules on first use)."""
    global _specs
    with _lock:
        if _specs is None:
            _specs = _discover()
        return _specs


def _discover() -> dict[str, DetectorSpec]:
    import detectors

    found: dict[str, DetectorSpec] = {}
    for info in sorted(pkgutil.iter_modules(detectors.__path__), key=lambda i: i.name):
        if info.ispkg or info.name.startswith("_") or info.name == "registry":
            continue
        module = importlib.import_module(f"detectors.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, DetectorSpec):
            if spec.name in found:
                raise RuntimeError(f"detector {spec.name!r} is registered twice ({module.__name__})")
            found[spec.name] = spec
    return found


def get(name: str) -> DetectorSpec:
    """The spec of a registered detector; UnknownDetector (naming the closest) otherwise."""
    try:
        return specs()[name]
    except KeyError:
        raise UnknownDetector(unknown_message(name)) from None


def unknown_message(name: str, extra: Sequence[str] = ()) -> str:
    import difflib

    valid = sorted({*specs(), *extra})
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(valid)}"
    return f"unknown detector '{name}'{hint}"


def violation_kinds() -> dict[str, ViolationKind]:
    """Every detection kind some detector declares a violation, with how it becomes one."""
    return {kind: how for spec in specs().values() for kind, how in spec.violations.items()}


def build(params: DetectorParams, camera: CameraView, pool: ModelPool) -> Detector:
    """The per-camera instance of the detector these parameters are for."""
    return get(params.type).build(params, camera, pool)
