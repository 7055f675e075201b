"""Write a minimal, valid agent config for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_config(directory: Path, port: int, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "site": {"id": "site-test", "name": "测试工地", "timezone": "Asia/Shanghai"},
        "device": {"id": "box-1"},
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                 "keepalive_s": 10},
        "storage": {"data_dir": str(directory / "data"), "outbox_max_mb": 64},
        "telemetry": {"interval_s": 60, "status_interval_s": 300},
        "speaker": {"enabled": False},  # tests that play audio turn it on, with the ALSA file sink
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


BASE = "edge/v1/site-test/box-1"


def send_signed_command(port: int, key: object, name: str, args: dict[str, Any], nonce: str) -> None:
    """Publish one command to the test box as the bureau would: signed, valid for 60 s."""
    import json
    from datetime import datetime, timedelta, timezone

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_agent.security.bureau_command import sign_command

    now = datetime.now(timezone.utc)
    body = {"v": 1, "id": f"c-{name}-{nonce[:6]}", "name": name, "site": "site-test", "device": "box-1",
            "issued_at": now.isoformat(), "expires_at": (now + timedelta(seconds=60)).isoformat(),
            "nonce": nonce, "args": args}
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bureau-{name}")
    sender.connect("127.0.0.1", port)
    sender.loop_start()
    try:
        sender.publish(f"{BASE}/cmd/{name}", json.dumps(sign_command(body, key)), qos=1).wait_for_publish(5)
    finally:
        sender.loop_stop()
        sender.disconnect()
