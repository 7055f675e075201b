"""The demo site: embedded broker (unless one is given), the agent, simulated devices, a console."""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from drivers.resources import bundled_config_dir
from edge_agent.config import AgentConfig
from edge_agent.daemon import Parts, build_agent
from edge_agent.demo.broker import EmbeddedBroker
from edge_agent.demo.console import ConsoleView
from edge_agent.demo.hardware import SimulatedBus
from edge_agent.demo.scenes import DemoCamera, RtspFeed, prepare, rtsp_available

log = logging.getLogger(__name__)


def dump_config(config: AgentConfig) -> str:
    """The demo's whole config as the YAML it writes to OUT/config.yaml (for `doctor`, `check-config`)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), allow_unicode=True, sort_keys=False)


def camera_entry(cam: DemoCamera, url: str) -> dict[str, Any]:
    """The `cameras:` entry of one demo camera served at `url` (its videos have a keyframe a second)."""
    entry: dict[str, Any] = {"id": cam.id, "pose": cam.pose, "url": url, "analysis_fps": 1,
                             "keyframe_interval_s": 1, "clip_pre_s": 5, "clip_post_s": 5, "zones": cam.zones,
                             "detectors": list(cam.detectors)}
    if cam.tamper:
        entry["tamper"] = cam.tamper
    return entry


class DemoSite:
    def __init__(self, out_dir: Path, mqtt: tuple[str, int] | None = None, quiet: bool = False,
                 hardware_only: bool = False):
        self.hardware_only = hardware_only
        self.out_dir = out_dir.resolve()
        self.mqtt = mqtt
        self.quiet = quiet
        self.broker: EmbeddedBroker | None = None
        self.parts: Parts | None = None
        self.console: ConsoleView | None = None
        self.buses: dict[str, SimulatedBus] = {}
        self.feeds: list[RtspFeed] = []
        self.camera_entries: list[dict[str, Any]] = []
        self._stopped = threading.Event()

    def build_config(self, host: str, port: int) -> AgentConfig:
        data: dict[str, Any] = yaml.safe_load((bundled_config_dir() / "demo.yaml").read_text(encoding="utf-8"))
        data["mqtt"].update({"host": host, "port": port})
        if self.mqtt is not None:
            data["mqtt"]["protocol"] = "auto"  # a real broker: MQTT 5 where it speaks it
        data["storage"]["data_dir"] = str(self.out_dir / "data")
        for meter in data.get("meters", []):
            if meter["id"] in self.buses:
                meter["port"] = self.buses[meter["id"]].agent_port
        data["cameras"] = self.camera_entries
        data["bureau"] = {"trusted_keys": [{"name": "demo-bureau", "public_key": self._bureau_key()}]}
        # Night from an hour ago to four hours on, so the night rules show whenever the demo runs.
        now = datetime.now(ZoneInfo(data["site"].get("timezone", "Asia/Shanghai")))
        start, end = now - timedelta(hours=1), now + timedelta(hours=4)
        data["schedule"]["night"] = [{"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}]
        return AgentConfig.model_validate(data)

    def start(self) -> AgentConfig:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.mqtt is None:
            self.broker = EmbeddedBroker().start()
            host, port = "127.0.0.1", self.broker.port
            print(f"demo: embedded MQTT broker on {host}:{port}", flush=True)
        else:
            host, port = self.mqtt
        # Two RS-485 buses: a noise meter with night piling, a PM sensor through a dust episode.
        self.buses = {
            "noise-1": SimulatedBus(self.out_dir / "dev" / "bus1", [("renke_rs_zs_n01", 1)], "night_piling").start(),
            "dust-1": SimulatedBus(self.out_dir / "dev" / "bus2", [("renke_rs_pm_n01", 1)], "dust_episode").start(),
        }
        self._start_cameras()
        config = self.build_config(host, port)
        (self.out_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
        if self.hardware_only:
            # The site without its box: practise `doctor` and `edge-fw` against simulated hardware.
            print(f"demo: simulated hardware only (no agent); its config is {self.out_dir / 'config.yaml'}\n"
                  f"  try: edge-agent doctor --config {self.out_dir / 'config.yaml'} --actuate\n"
                  f"  (with ALSA_CONFIG_PATH={os.environ.get('ALSA_CONFIG_PATH', '')} "
                  "GPIOZERO_PIN_FACTORY=mock for the simulated speaker and relays)", flush=True)
            return config
        if not self.quiet:
            base = f"{config.mqtt.topic_prefix}/{config.site.id}/{config.device.id}"
            self.console = ConsoleView(host, port, base, tz=config.site.timezone)
        self.parts = build_agent(config)
        self.parts.start()
        print(f"demo: site {config.site.id} running; data and evidence in {self.out_dir}; Ctrl-C stops",
              flush=True)
        base = f"{config.mqtt.topic_prefix}/{config.site.id}/{config.device.id}"
        print(f"demo: try a bureau command:\n  edge-agent sign-command shout --key {self.bureau_key_path} "
              f"--site {config.site.id} --device {config.device.id} --arg clip=shout | "
              f"mosquitto_pub -h {host} -p {port} -t {base}/cmd/shout -s", flush=True)
        return config

    def _bureau_key(self) -> str:
        """A bureau key pair for the demo, so signed commands can be tried (`edge-agent sign-command`)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from edge_agent.security.keys import load_private_key, public_b64, write_private_key

        path = self.out_dir / "keys" / "bureau.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private_key(path, Ed25519PrivateKey.generate())
        self.bureau_key_path = path
        return public_b64(load_private_key(path).public_key())

    def _start_cameras(self) -> None:
        why = rtsp_available()
        if why is not None:
            print(f"demo: no cameras ({why}); meters, rules and actions still run", flush=True)
            return
        print("demo: preparing the camera videos (encoded once, then cached)...", flush=True)
        from edge_agent.loopback import free_port

        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-agent" / "demo-video"
        for cam, video in prepare(cache):
            feed = RtspFeed(video, free_port()).start()
            self.feeds.append(feed)
            self.camera_entries.append(camera_entry(cam, feed.url))

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.parts is not None:
            self.parts.stop(timeout=3)
        if self.console is not None:
            self.console.stop()
        for bus in self.buses.values():
            bus.stop()
        for feed in self.feeds:
            feed.stop()
        if self.broker is not None:
            self.broker.stop()
