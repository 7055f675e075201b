"""Checks across sections, after each section has validated on its own: what the config means.

A config can be valid key by key and still not do what it seems to: a dust rule judging a
quantity no meter gives never fires, an action naming a relay that does not exist switches
nothing, a washing detector without its wash bay is never built. `cross_check` is the one
place that judges this; the loader (`FILE:LINE:COL: warning: ...`), `check-config` (exit 2
with `--strict`), `doctor` (WARN lines) and the daemon (log at start, `config_warnings` in
the retained status) all show its findings.

Each finding carries the path of the YAML key it is about, so the loader can print the
exact line, the same way as for a type error inside one section. An `error` makes the
config unusable (exit 2); a `warning` leaves it running, and says what will not work.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from detectors.registry import specs, unknown_message, violation_kinds
from drivers.modbus.profile import ProfileError, load_profile
from edge_agent.config.actions import DEFAULT_ACTIONS
from edge_agent.config.rules import RULE_KINDS
from edge_agent.measures.series import MEAN_WINDOWS, NOISE_WINDOWS
from edge_agent.video.streams import plan_streams

if TYPE_CHECKING:
    from edge_agent.config.root import AgentConfig

Loc = tuple[str | int, ...]
Severity = Literal["error", "warning"]

# Kinds raised outside the rules and detectors: camera tamper and faults (edge_agent/video/tamper.py),
# device faults of meters, storage and relays (edge_agent/measures/figures.py, edge_agent/actions/).
OTHER_KINDS = ("camera_tamper", "device_fault")
DUST_UNITS = ("mg/m3", "mg/m³", "ug/m3", "µg/m³", "ug/m³", "μg/m³", "µg/m3", "μg/m3")  # rules/engine.py converts
RTSP_PORTS = {"rtsp": 554, "rtsps": 322}


@dataclass(frozen=True)
class Finding:
    """One thing found, at the key it is about.

    `also`: keys to point at instead when `loc` is not written in the file (a default): e.g.
    a missing `exit_line` is best shown at the detector's entry, or else at the camera that
    lists the detector.
    """

    loc: Loc
    reason: str
    severity: Severity = "error"
    also: tuple[Loc, ...] = ()

    @property
    def is_warning(self) -> bool:
        return self.severity == "warning"


def cross_check(config: AgentConfig) -> list[Finding]:
    """Every finding across sections: errors (unusable, exit 2) and warnings (valid, but something
    will not work), each with the key it is about; duplicates removed, in a stable order."""
    out: list[Finding] = []
    seen: set[tuple[Loc, str]] = set()
    for finding in (*_unknown_detectors(config), *_quantities(config), *_windows(config), *_actions(config),
                    *_zones(config), *_bureau(config), *_cameras(config), *_location(config)):
        if (finding.loc, finding.reason) not in seen:
            seen.add((finding.loc, finding.reason))
            out.append(finding)
    return out


def _warn(loc: Loc, reason: str, *also: Loc) -> Finding:
    return Finding(loc, reason, "warning", also)


# --- errors ---------------------------------------------------------------------------------------


def _unknown_detectors(config: AgentConfig) -> Iterator[Finding]:
    known = config.detectors.names()
    for i, cam in enumerate(config.cameras):
        for j, name in enumerate(cam.detectors):
            if name not in known:
                yield Finding(("cameras", i, "detectors", j), unknown_message(name, known))


# --- rules: what they judge must exist --------------------------------------------------------------


def provided_quantities(config: AgentConfig) -> dict[str, list[str]]:
    """Quantity -> ids of the enabled meters that give it (from each meter's profile).

    An enabled microphone gives its quantity (`noise_la`) under its sensor id.
    """
    out: dict[str, list[str]] = {}
    if config.microphone.enabled:
        out.setdefault(config.microphone.quantity, []).append(config.microphone.sensor_id)
    for meter in config.meters:
        if not meter.enabled:
            continue
        try:
            profile = load_profile(meter.profile)
        except ProfileError:  # reported as an error of meters[i].profile already
            continue
        for field in profile.fields:
            out.setdefault(field.quantity, []).append(meter.id)
    return out


def _quantities(config: AgentConfig) -> Iterator[Finding]:
    rules = config.rules
    given = provided_quantities(config)
    disabled = [m.id for m in config.meters if not m.enabled]
    noise_rules = [name for name, on in (("noise", rules.noise.enabled), ("early_warning", rules.early_warning.enabled),
                                         ("night_lmax", rules.night_lmax.enabled),
                                         ("night_work", rules.night_work.enabled)) if on]
    dust_rules = [name for name, on in (("dust", rules.dust.enabled),
                                        ("dust_early_warning", rules.dust_early_warning.enabled)) if on]
    for section, quantity, users in (("noise", rules.noise.quantity, noise_rules),
                                     ("dust", rules.dust.quantity, dust_rules)):
        if not users or quantity in given:
            continue
        has = ", ".join(sorted(given)) or "nothing: no meter is configured"
        off = f" (disabled: {', '.join(disabled)})" if disabled else ""
        close = difflib.get_close_matches(quantity, list(given), n=1, cutoff=0.6)
        fix = f"did you mean '{close[0]}'? Else judge" if close else "judge"
        yield _warn(("rules", section, "quantity"),
                    f"no enabled meter gives '{quantity}' (the meters' profiles give {has}){off}: "
                    f"{', '.join('rules.' + u for u in users)} can never fire; {fix} a quantity a meter gives, "
                    f"add a meter that gives '{quantity}', or set enabled: false on those rules",
                    ("rules", section), ("meters",))


def _windows(config: AgentConfig) -> Iterator[Finding]:
    """A window the measures do not compute is a rule that never fires; a warning on a longer window
    than its limit's comes after the limit, not before."""
    rules = config.rules
    checks: list[tuple[str, bool, int, tuple[int, ...]]] = [
        ("noise", rules.noise.enabled, rules.noise.window_s, NOISE_WINDOWS),
        ("early_warning", rules.early_warning.enabled, rules.early_warning.window_s, NOISE_WINDOWS),
        ("night_work", rules.night_work.enabled, rules.night_work.window_s, NOISE_WINDOWS),
        ("dust", rules.dust.enabled, rules.dust.window_s, MEAN_WINDOWS),
        ("dust_early_warning", rules.dust_early_warning.enabled, rules.dust_early_warning.window_s, MEAN_WINDOWS),
    ]
    for name, enabled, window, computed in checks:
        if enabled and window not in computed:
            yield _warn(("rules", name, "window_s"),
                        f"no figure is computed over {window} s, so this rule can never fire; use one of "
                        f"{', '.join(map(str, computed))}", ("rules", name))
    for name, limit_name, window, limit_window in (
            ("early_warning", "noise", rules.early_warning.window_s, rules.noise.window_s),
            ("dust_early_warning", "dust", rules.dust_early_warning.window_s, rules.dust.window_s)):
        if getattr(rules, name).enabled and window > limit_window:
            yield _warn(("rules", name, "window_s"),
                        f"the warning watches {window} s, longer than the limit's rules.{limit_name}.window_s "
                        f"({limit_window} s): it comes after the limit is crossed, not before; use at most "
                        f"{limit_window}", ("rules", name), ("rules", limit_name, "window_s"))
    if rules.dust.unit not in DUST_UNITS:
        yield _warn(("rules", "dust", "unit"),
                    f"unknown unit {rules.dust.unit!r}: readings are converted for mg/m3 or ug/m3 only, so the "
                    "limit would be compared in the wrong unit", ("rules", "dust"))


# --- actions: the clips and relays they name --------------------------------------------------------


def _actions(config: AgentConfig) -> Iterator[Finding]:
    relays = {relay.id for relay in config.relays}
    kinds = {*RULE_KINDS, *violation_kinds(), *OTHER_KINDS}
    for kind, rule in config.actions.items():
        if kind not in kinds:
            close = difflib.get_close_matches(kind, sorted(kinds), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"kinds: {', '.join(sorted(kinds))}"
            yield _warn(("actions", kind), f"no rule or detector raises '{kind}', so this action never runs; {hint}")
        if rule.clip is not None and rule.clip not in config.speaker.clips:
            close = difflib.get_close_matches(rule.clip, list(config.speaker.clips), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "add it under speaker.clips"
            yield _warn(("actions", kind, "clip"),
                        f"no clip '{rule.clip}' in speaker.clips: nothing is announced for {kind}; {hint}",
                        ("actions", kind))
        if rule == DEFAULT_ACTIONS.get(kind):
            continue  # a built-in rule names spray and strobe; a box without them simply skips them
        for j, relay in enumerate(rule.relays):
            if relay not in relays:
                have = ", ".join(sorted(relays)) or "none"
                yield _warn(("actions", kind, "relays", j),
                            f"no relay '{relay}' under relays (this box has: {have}): it is never switched "
                            f"for {kind}", ("actions", kind))


# --- detectors: the zones and lines they need --------------------------------------------------------


def _zones(config: AgentConfig) -> Iterator[Finding]:
    registry = specs()
    for i, cam in enumerate(config.cameras):
        if not cam.enabled:
            continue
        for j, name in enumerate(cam.detectors):
            if name not in config.detectors.names():
                continue  # an error above
            params = config.detectors.settings(name)
            spec = registry.get(params.type)
            if spec is None:
                continue
            at: Loc = ("cameras", i, "detectors", j)
            has = ", ".join(sorted(cam.zones)) or "none"
            for zone in spec.needs_zones(params):
                if zone.startswith("("):  # "(any zone)": the detector watches whichever zones there are
                    if not cam.zones:
                        yield _warn(at, f"{name} on camera '{cam.id}' watches the camera's zones, and it has "
                                    f"none: it cannot run; draw the areas to watch under cameras[{i}].zones")
                elif zone not in cam.zones:
                    yield _warn(at, f"{name} on camera '{cam.id}' needs a zone '{zone}' (its zones: {has}): it "
                                f"cannot run; draw it under cameras[{i}].zones, or name another in "
                                f"detectors.{name}")
            if "exit_line" in type(params).model_fields and getattr(params, "exit_line", None) is None:
                yield _warn(("detectors", name, "exit_line"),
                            f"{name} needs detectors.{name}.exit_line (two points [[x, y], [x, y]] across the "
                            f"exit, normalised) for camera '{cam.id}': without it it cannot run",
                            ("detectors", name), at)


# --- bureau, cameras, location ------------------------------------------------------------------------


def _bureau(config: AgentConfig) -> Iterator[Finding]:
    bureau = config.bureau
    if bureau.commands and not bureau.trusted_keys:
        yield _warn(("bureau", "trusted_keys"),
                    f"no trusted key: every bureau command ({', '.join(bureau.commands)}) will be refused; add "
                    "the bureau's public key under bureau.trusted_keys, or set bureau.commands: [] if this box "
                    "takes none", ("bureau", "commands"), ("bureau",))


def _same_stream(url: str) -> tuple[str, str, int, str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port  # raises ValueError for a port that is not a number ("…:ming/…")
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or RTSP_PORTS.get(scheme, 554), \
        parts.path.rstrip("/") or "/", parts.query


def _cameras(config: AgentConfig) -> Iterator[Finding]:
    seen: dict[tuple[str, str, int, str, str], tuple[int, str]] = {}
    for i, cam in enumerate(config.cameras):
        if not cam.enabled:
            continue
        for key in ("url", "sub_url"):
            url = getattr(cam, key)
            if url is None:
                continue
            first = seen.setdefault(_same_stream(url), (i, key))
            if first != (i, key):
                j, other = first
                yield _warn(("cameras", i, key),
                            f"the same stream as cameras[{j}].{other} ('{config.cameras[j].id}'): one camera read "
                            "twice (double the decoding, duplicate violations); give each entry its own camera")
        kf = cam.keyframe_interval_s
        # What the main stream must decode follows its detectors (edge_agent/video/streams.py, as the box does).
        plan = plan_streams(cam, config.detectors)
        if kf is not None and plan.main_decoded and not plan.main_keyframes_serve(kf):
            rate, need = 1.0 / kf, 1.0 / plan.main_keyframe_max_s
            full = [n for n in plan.main if n in plan.need_rate]
            if full:
                fix = (f"{', '.join(full)} need{'s' if len(full) == 1 else ''} frames at analysis_fps: give the "
                       "camera's sub-stream (sub_url) for them, " if cam.sub_url is None else "") + \
                      f"set analysis_fps to at most {rate:g}, or the camera's I-frame interval to its frame rate " \
                      "(one keyframe a second)"
            else:
                fix = f"set the camera's I-frame interval to at most {plan.main_keyframe_max_s:g} s"
            yield _warn(("cameras", i, "analysis_fps"),
                        f"{need:g} frames a second is more than the camera's keyframes ({rate:g} a "
                        f"second, keyframe_interval_s {kf:g}): the frames between keyframes must be decoded too, "
                        "the dearest work on the box (bench/camera_cpu.py, 1080p25 at 1 fps: a 2-s GOP costs "
                        f"about 5x the keyframes-only decode); {fix}",
                        ("cameras", i, "keyframe_interval_s"), ("cameras", i))


def _location(config: AgentConfig) -> Iterator[Finding]:
    loc = config.site.location
    if (loc.latitude is None) != (loc.longitude is None):
        missing = "longitude" if loc.longitude is None else "latitude"
        yield _warn(("site", "location"), f"{missing} is missing: the bureau's map cannot place the site",
                    ("site",))
