"""A simulated box that speaks the agent's real formats, for tests, the bench and trying the console.

Every message is made by the agent's own code: `encode_json` (the outbox's JSON with
`msg_id` first), `Measure.to_json`, `Violation.to_json`, `EvidenceStore` (signed, chained
bundles written to disk), `publish_bundle` (files first, then the manifest's exact bytes),
and the watermarked snapshot of `drivers.camera.osd`. Nothing here is a copy of a format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge_agent import __version__ as agent_version
from edge_agent.evidence.bundle import Evidence, EvidenceFile, EvidenceStore
from edge_agent.evidence.publish import publish_bundle
from edge_agent.outbox import encode_json, new_msg_id
from edge_agent.security.keys import Signer, device_signer
from edge_agent.timefmt import iso
from edge_agent.types import Measure, Violation
from edge_agent.uplink.topics import Topics

Message = tuple[str, bytes, bool]  # full topic, payload, retained


def snapshot_jpeg(lines: list[str], width: int = 640, height: int = 360, seed: int = 0) -> bytes:
    """A synthetic site picture with the box's own watermark."""
    import numpy as np

    from drivers.camera.osd import watermark_jpeg

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:, :] = (150, 170, 185)  # sky, BGR
    img[height // 2:, :] = (60, 90, 120)  # soil
    x = int(rng.integers(40, width - 140))
    img[height // 2 - 60:height // 2 + 20, x:x + 100] = (40, 40, 40)  # a machine
    return watermark_jpeg(img, lines)


class SimBox:
    def __init__(self, site: str, device: str, folder: Path, *, prefix: str = "edge/v1", tz: str = "Asia/Shanghai",
                 clock: Callable[[], datetime] | None = None):
        self.site = site
        self.device = device
        self.tz = tz
        self.topics = Topics(prefix, site, device)
        self.now = clock or (lambda: datetime.now(timezone.utc))
        self.signer: Signer = device_signer(folder / "keys" / "device.key")
        self.evidence = EvidenceStore(folder / "evidence", self.signer, site, device, now=self.now,
                                      clock_sync=lambda: True)
        self.started = self.now()

    def _json(self, leaf: str, payload: dict[str, Any], when: datetime | None = None,
              retain: bool = False) -> Message:
        body = {"time": iso(when or self.now(), self.tz), "site": self.site, "device": self.device,
                "version": agent_version, "clock_synchronized": True, **payload}
        return (self.topics.full(leaf), encode_json(body, new_msg_id()), retain)

    def status(self, state: str = "online", *, outbox_depth: int = 0, will: bool = False,
               components: dict[str, Any] | None = None) -> Message:
        if will:
            body: dict[str, Any] = {"state": "offline", "reason": "connection lost"}
        else:
            body = {"state": state, "started": iso(self.started, self.tz),
                    "uptime_s": round((self.now() - self.started).total_seconds(), 1),
                    "clock": {"synchronized": True, "steps": 0, "last_step": None},
                    "outbox": {"storage": "ok", "depth": outbox_depth, "bytes": 0, "by_kind": {}, "dropped": {}},
                    "components": components if components is not None else {
                        "uplink": {"state": "ok", "connected": True}, "meters/noise-1": {"state": "ok"},
                        "meters/dust-1": {"state": "ok"}, "cameras": {"state": "ok"},
                        "actions": {"state": "ok", "speaker": {"state": "ok", "clips": {"ready": [
                            "shout", "noise_stop", "dust"]}}},
                        "evidence": {"state": "ok", "device_key_id": self.signer.key_id}}}
        return self._json(Topics.STATUS, body, retain=True)

    def telemetry(self, end: datetime, leq: float, lmax: float, pm10: float) -> Message:
        measures = [Measure("noise-1", "noise_la", 60, "leq", leq, "dB(A)", end, 60),
                    Measure("noise-1", "noise_la", 60, "lmax", lmax, "dB(A)", end, 60),
                    Measure("noise-1", "noise_la", 60, "lmin", max(30.0, leq - 12), "dB(A)", end, 60),
                    Measure("dust-1", "pm10", 60, "avg", pm10, "ug/m3", end, 60),
                    Measure("dust-1", "pm2_5", 60, "avg", pm10 * 0.45, "ug/m3", end, 60)]
        body = {"interval_s": 60, "end": iso(end, self.tz), "figures": "block",
                "measures": [m.to_json() for m in measures]}
        return self._json(Topics.TELEMETRY, body, when=end)

    def violation(self, kind: str, state: str, started: datetime, figures: dict[str, Any], *,
                  source: str = "noise-1", message: str = "", when: datetime | None = None) -> Violation:
        return Violation(kind, state, f"{kind}:{source}:{int(started.timestamp())}", when or self.now(), started,
                         source, figures, message)

    def event(self, violation: Violation, evidence_expected: bool = True) -> Message:
        body = {**violation.to_json(), "evidence_expected": evidence_expected and violation.state == "started"}
        return self._json(Topics.EVENT, body, when=violation.time)

    def bundle(self, violation: Violation, readings: list[dict[str, Any]] | None = None, *,
               snapshot: bool = True, extra: tuple[EvidenceFile, ...] = ()) -> tuple[Evidence, list[Message]]:
        """A signed bundle for the violation, and its messages in the box's order (files, then manifest)."""
        import json

        rows = readings or [{"sensor": violation.source, "quantity": "noise_la", "value": v, "unit": "dB(A)",
                             "time": iso(violation.started + timedelta(seconds=i), "UTC"), "quality": "ok"}
                            for i, v in enumerate(_wave(60, 58.0, 78.0))]
        files = [EvidenceFile("readings.json", json.dumps(
            {"violation_key": violation.key, "kind": violation.kind, "readings": rows}, ensure_ascii=False,
            indent=1).encode("utf-8"), "application/json")]
        if snapshot:
            stamp = [f"{self.site} {self.device}", iso(violation.time, self.tz)[:19], violation.kind]
            files.append(EvidenceFile("snapshot.jpg", snapshot_jpeg(stamp, seed=violation.started.second)))
        files.extend(extra)
        ev = self.evidence.create(files, violation=violation)
        messages: list[Message] = []
        publish_bundle(ev, lambda leaf, payload, kind: messages.append(
            (self.topics.full(leaf), payload if isinstance(payload, bytes) else b"", False)))
        return ev, messages


def _wave(n: int, low: float, high: float) -> list[float]:
    return [round(low + (high - low) * (0.5 + 0.5 * math.sin(i / 6)), 1) for i in range(n)]
