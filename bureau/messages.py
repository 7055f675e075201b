"""What arrives on `PREFIX/SITE/DEVICE/...`, parsed into records for the store, or refused with a reason.

The payload formats are the agent's own (README "What goes to the bureau"): every JSON
payload carries `msg_id`, `time`, `site`, `device` and `clock_synchronized`; evidence comes
as each file's bytes on `evidence/<id>/<file>` (a large one in parts on `…/<file>/<index>/<count>`)
and the signed manifest on `evidence`.
Anything else is a `Refused` record: kept for people to see, never applied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent.evidence.bundle import BUNDLE_DIR
from edge_agent.evidence.publish import parse_file_leaf
from edge_agent.security.bureau_command import parse_time
from edge_agent.security.canonical import loads_strict

TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a site or device id, as commands address them
MSG_ID = re.compile(r"[\x21-\x7e]{1,128}")
STATES = ("started", "ongoing", "ended")
# queued: a speaker command waits its turn; played: its final ack, with the times it was heard
RESULTS = ("accepted", "refused", "done", "failed", "queued", "played")
# Figures drawn on the charts, by (quantity, figure) of the 60-s measures.
CHART_FIGURES = {("noise_la", "leq"): "leq", ("noise_la", "lmax"): "lmax"}
DUST_QUANTITIES = ("tsp", "pm10", "pm2_5")


@dataclass(frozen=True)
class Status:
    site: str
    device: str
    msg_id: str
    time: float
    state: str  # online / offline
    body: dict[str, Any]


@dataclass(frozen=True)
class Telemetry:
    site: str
    device: str
    msg_id: str
    end: float  # end of the interval, epoch seconds
    leq: float | None
    lmax: float | None
    dust: dict[str, float]  # quantity -> mean
    clock_synchronized: bool | None
    extra: list[Any]  # the other measures, compact: [sensor, quantity, window_s, figure, value, unit, valid]


@dataclass(frozen=True)
class Event:
    site: str
    device: str
    msg_id: str
    time: float
    key: str
    kind: str
    state: str
    started: float
    source: str
    figures: dict[str, Any]
    message: str
    clock_synchronized: bool | None
    body: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    site: str
    device: str
    bundle: str
    raw: bytes
    manifest: dict[str, Any]


@dataclass(frozen=True)
class EvidenceFile:
    site: str
    device: str
    bundle: str
    name: str
    data: bytes


@dataclass(frozen=True)
class EvidencePart:
    """One part of a large evidence file (`evidence/<id>/<file>/<index>/<count>`), joined on arrival of all."""

    site: str
    device: str
    bundle: str
    name: str
    index: int
    count: int
    data: bytes


@dataclass(frozen=True)
class Ack:
    site: str
    device: str
    msg_id: str
    time: float
    command_id: str | None
    command: str
    result: str
    reason: str
    detail: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    topic: str
    reason: str
    size: int
    site: str | None = None
    device: str | None = None
    sample: str = field(default="")


Record = Status | Telemetry | Event | Manifest | EvidenceFile | EvidencePart | Ack | Refused


class _Refuse(Exception):
    pass


def _epoch(value: Any, what: str) -> float:
    if not isinstance(value, str):
        raise _Refuse(f"'{what}' missing or not a string")
    try:
        return parse_time(value).timestamp()
    except (ValueError, OverflowError):
        raise _Refuse(f"'{what}' is not ISO 8601 with an offset") from None


def _json_body(payload: bytes, site: str, device: str, max_json: int) -> dict[str, Any]:
    if len(payload) > max_json:
        raise _Refuse(f"oversize: {len(payload)} bytes, JSON messages are limited to {max_json}")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _Refuse(f"malformed: not JSON ({str(exc)[:80]})") from None
    if not isinstance(body, dict):
        raise _Refuse("malformed: not a JSON object")
    if body.get("site") != site or body.get("device") != device:
        raise _Refuse(f"forged or misrouted: the payload names {str(body.get('site'))[:64]}/"
                      f"{str(body.get('device'))[:64]}, the topic {site}/{device}")
    msg_id = body.get("msg_id")
    if not isinstance(msg_id, str) or not MSG_ID.fullmatch(msg_id):
        raise _Refuse("malformed: 'msg_id' missing or invalid")
    return body


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _sync(body: dict[str, Any]) -> bool | None:
    value = body.get("clock_synchronized")
    return value if isinstance(value, bool) else None


def parse(topic: str, payload: bytes, prefix: str, *, max_json: int = 256 * 1024,
          max_bytes: int = 32 * 1024 * 1024) -> Record | None:
    """One MQTT message as a record; None for topics that are not the bureau's (its own commands)."""
    prefix = prefix.strip("/")
    if not topic.startswith(prefix + "/"):
        return Refused(topic[:200], "topic outside the prefix", len(payload))
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) < 3:
        return Refused(topic[:200], "topic is not PREFIX/SITE/DEVICE/...", len(payload))
    site, device, leaf = parts[0], parts[1], parts[2:]
    if not (TARGET.fullmatch(site) and TARGET.fullmatch(device)):
        return Refused(topic[:200], "site or device id is not valid", len(payload))
    if leaf[0] == "cmd" and len(leaf) == 2 and leaf[1] != "ack":
        return None  # a command on its way down (ours, or another bureau's): not ingested
    if len(payload) > max_bytes:
        return Refused(topic[:200], f"oversize: {len(payload)} bytes, the limit is {max_bytes}", len(payload),
                       site, device)
    try:
        return _parse(site, device, leaf, payload, max_json)
    except _Refuse as exc:
        sample = payload[:200].decode("utf-8", "replace") if leaf[0] != "evidence" or len(leaf) == 1 else ""
        return Refused(topic[:200], str(exc), len(payload), site, device, sample)


def _parse(site: str, device: str, leaf: list[str], payload: bytes, max_json: int) -> Record:
    kind = "/".join(leaf)
    if kind == "status":
        body = _json_body(payload, site, device, max_json)
        state = body.get("state")
        if state not in ("online", "offline"):
            raise _Refuse("malformed: 'state' must be online or offline")
        return Status(site, device, body["msg_id"], _epoch(body.get("time"), "time"), state, body)
    if kind == "telemetry":
        body = _json_body(payload, site, device, max_json)
        end = _epoch(body.get("end") or body.get("time"), "end")
        measures = body.get("measures")
        if not isinstance(measures, list):
            raise _Refuse("malformed: 'measures' must be a list")
        leq = lmax = None
        dust: dict[str, float] = {}
        extra: list[Any] = []
        for m in measures:
            if not isinstance(m, dict):
                raise _Refuse("malformed: a measure is not an object")
            quantity, figure, value = m.get("quantity"), m.get("figure"), _float(m.get("value"))
            window = m.get("window_s")
            chart = CHART_FIGURES.get((str(quantity), str(figure))) if window == 60 else None
            if chart == "leq" and value is not None:
                leq = value
            elif chart == "lmax" and value is not None:
                lmax = value
            elif quantity in DUST_QUANTITIES and figure == "avg" and window == 60 and value is not None:
                dust[str(quantity)] = value
            else:
                extra.append([m.get("sensor"), quantity, window, figure, value, m.get("unit"), m.get("valid")])
        return Telemetry(site, device, body["msg_id"], end, leq, lmax, dust, _sync(body), extra)
    if kind == "event":
        body = _json_body(payload, site, device, max_json)
        key, ev_kind, state = body.get("key"), body.get("kind"), body.get("state")
        if not (isinstance(key, str) and 0 < len(key) <= 200 and isinstance(ev_kind, str) and 0 < len(ev_kind) <= 64):
            raise _Refuse("malformed: 'key' and 'kind' must be short strings")
        if state not in STATES:
            raise _Refuse("malformed: 'state' must be started, ongoing or ended")
        raw_figures = body.get("figures")
        figures: dict[str, Any] = raw_figures if isinstance(raw_figures, dict) else {}
        return Event(site, device, body["msg_id"], _epoch(body.get("time"), "time"), key, ev_kind, state,
                     _epoch(body.get("started"), "started"), str(body.get("source") or "")[:64], figures,
                     str(body.get("message") or "")[:500], _sync(body), body)
    if kind == "cmd/ack":
        body = _json_body(payload, site, device, max_json)
        result = body.get("result")
        if result not in RESULTS:
            raise _Refuse("malformed: 'result' must be accepted, refused, done, failed, queued or played")
        cid = body.get("id")
        return Ack(site, device, body["msg_id"], _epoch(body.get("time"), "time"),
                   cid if isinstance(cid, str) and len(cid) <= 128 else None, str(body.get("command") or "")[:32],
                   result, str(body.get("reason") or "")[:64], str(body.get("detail") or "")[:300], body)
    if kind == "evidence":
        if len(payload) > max_json:
            raise _Refuse(f"oversize: a manifest of {len(payload)} bytes")
        try:
            manifest = loads_strict(payload)
        except (ValueError, RecursionError) as exc:
            raise _Refuse(f"malformed manifest: {str(exc)[:80]}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("id"), str):
            raise _Refuse("malformed manifest: no 'id'")
        if not BUNDLE_DIR.fullmatch(manifest["id"]):
            raise _Refuse("malformed manifest: 'id' is not a bundle id")
        if manifest.get("site") != site or manifest.get("device") != device:
            raise _Refuse("forged or misrouted: the manifest names another site/device than its topic")
        if not isinstance(manifest.get("files"), list):
            raise _Refuse("malformed manifest: 'files' must be a list")
        return Manifest(site, device, manifest["id"], payload, manifest)
    if leaf[0] == "evidence" and len(leaf) in (3, 5):
        piece = parse_file_leaf(kind)
        if piece is None:
            raise _Refuse("evidence file topic with a bad bundle id, file name or part number")
        if piece.count == 1:
            return EvidenceFile(site, device, piece.bundle, piece.name, payload)
        return EvidencePart(site, device, piece.bundle, piece.name, piece.index, piece.count, payload)
    raise _Refuse(f"unknown topic leaf '{kind[:40]}'")


def iso_local(ts: float | None, tz: Any) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")
