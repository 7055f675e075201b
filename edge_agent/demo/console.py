"""A compact live view of what the box sends to the bureau, for the demo's terminal."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.uplink.topics import Topics

SITE_TZ = ZoneInfo("Asia/Shanghai")


def _clock(payload: dict[str, Any]) -> str:
    """The message's time on the site's clock."""
    try:
        return datetime.fromisoformat(str(payload.get("time"))).astimezone(SITE_TZ).strftime("%H:%M:%S")
    except ValueError:
        return "--:--:--"


def format_message(leaf: str, payload: dict[str, Any]) -> str | None:
    """One line per message; None for messages not worth a line (evidence file bytes)."""
    t = _clock(payload)
    if leaf == Topics.STATUS:
        comps = payload.get("components", {})
        bad = [name for name, h in comps.items() if h.get("state") not in ("ok", None)]
        outbox = payload.get("outbox", {})
        health = "all ok" if not bad else "degraded: " + ", ".join(bad)
        return f"{t} status    {payload.get('state'):<7} outbox {outbox.get('depth', '?')}  {health}"
    if leaf == "telemetry":
        parts = []
        for m in payload.get("measures", []):
            if m.get("window_s") == payload.get("interval_s", 60) or m.get("figure") in ("leq", "avg"):
                if m.get("value") is None:
                    continue
                parts.append(f"{m['sensor']} {m['quantity']} {m['figure']} {m['value']:.1f} {m.get('unit', '')}")
        return f"{t} telemetry " + ("; ".join(parts[:6]) if parts else "(heartbeat, no figures yet)")
    if leaf == Topics.EVENT:
        figures = payload.get("figures", {})
        fig = ", ".join(f"{k} {v}" for k, v in list(figures.items())[:3])
        return f"{t} EVENT     {payload.get('kind')} {payload.get('state')}  {fig}"
    if leaf == "evidence":
        t = _clock({"time": payload.get("created")})
        names = ", ".join(f["name"] for f in payload.get("files", []))
        return f"{t} evidence  {payload.get('id')}  {names}, signed"
    if leaf == Topics.CMD_ACK:
        return f"{t} ack       {payload.get('command')} {payload.get('result')}"
    return None


class ConsoleView:
    """Subscribes like the bureau would and prints one line per message."""

    def __init__(self, host: str, port: int, base_topic: str, out: TextIO = sys.stdout, tz: str = "Asia/Shanghai"):
        global SITE_TZ
        SITE_TZ = ZoneInfo(tz)
        self.base = base_topic
        self.out = out
        self.counts: dict[str, int] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-console", protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe(f"{base_topic}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async(host, port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic[len(self.base) + 1:]
        kind = leaf.split("/")[0]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if leaf.startswith("evidence/"):
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        line = format_message(leaf, payload)
        if line:
            print(line, file=self.out, flush=True)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
