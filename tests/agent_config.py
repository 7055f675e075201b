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
