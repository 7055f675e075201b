"""Logs go to stderr (journald adds the time and unit); text for people, JSON for shippers."""

from __future__ import annotations

import json
import logging
import sys

from edge_agent.config.logging import LoggingConfig


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(config: LoggingConfig | None = None) -> None:
    config = config or LoggingConfig()
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    # paho and pymodbus are chatty at DEBUG; keep them at WARNING unless we debug ourselves.
    for noisy in ("pymodbus", "paho", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING if config.level != "DEBUG" else logging.INFO)
