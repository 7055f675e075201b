"""`edge-agent check-config PATH`: validate a config and show what the box will do with it."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.cli._common import EXIT_CONFIG, load_or_report
from edge_agent.config import AgentConfig

NAME = "check-config"
HELP = "validate a config file (exit 0 and a summary, or exit 2 and FILE:LINE:COL: path: reason)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="the YAML config file")


def summary(config: AgentConfig) -> list[str]:
    mqtt = config.mqtt
    auth = f"user {mqtt.username!r}, password from {mqtt.password.describe()}" if mqtt.password else (
        f"user {mqtt.username!r}" if mqtt.username else "anonymous")
    tls = "TLS" + (f" (CA {mqtt.tls.ca_file})" if mqtt.tls and mqtt.tls.ca_file else "") if mqtt.tls else "no TLS"
    st = config.storage
    lines = [
        f"site      {config.site.id} {config.site.name!r}, time zone {config.site.timezone}",
        f"device    {config.device.id}",
        f"mqtt      {mqtt.host}:{mqtt.port}, {tls}, {auth}, MQTT {mqtt.protocol}",
        f"topics    {mqtt.topic_prefix}/{config.site.id}/{config.device.id}/...",
        f"storage   {st.data_dir}, outbox cap {st.outbox_max_mb} MB, keep readings "
        f"{st.retention.readings_days} d, video {st.retention.video_days} d",
        f"telemetry every {config.telemetry.interval_s} s, status every {config.telemetry.status_interval_s} s",
    ]
    for name, value in config:
        if name in ("site", "device", "mqtt", "storage", "telemetry", "logging"):
            continue
        if isinstance(value, list):
            ids = [str(getattr(item, "id", "")) for item in value]
            lines.append(f"{name:<9} {len(value)}" + (f": {', '.join(i for i in ids if i)}" if any(ids) else ""))
        elif value is not None:
            lines.append(f"{name:<9} configured")
    return lines


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.path)
    if config is None:
        return EXIT_CONFIG
    print(f"{args.path}: OK")
    for line in summary(config):
        print("  " + line)
    return 0
