"""`edge-agent check-config PATH`: validate a config and show what the box will do with it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.cli._common import EXIT_CONFIG, load_checked_or_report
from edge_agent.config import AgentConfig

NAME = "check-config"
HELP = ("validate a config file (exit 0 and a summary, or exit 2 and FILE:LINE:COL: path: reason); "
        "warnings (FILE:LINE:COL: warning: path: reason) say what would not work")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="the YAML config file")
    parser.add_argument("--strict", action="store_true",
                        help="treat warnings as errors: exit 2 if there is any (for CI and the final check on site)")


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
    loaded = load_checked_or_report(args.path)
    if loaded is None:
        return EXIT_CONFIG
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    count = len(loaded.warnings)
    if count and args.strict:
        print(f"{args.path}: {count} warning(s), which --strict counts as errors", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.path}: OK" + (f", {count} warning(s) (on stderr)" if count else ""))
    for line in summary(loaded.config):
        print("  " + line)
    return 0
