"""Joins the fleet commands to a built agent (called by edge_agent/daemon.py's build_agent)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.app import Agent
from edge_agent.command_dispatch import AckResult, CommandHandler, load_trusted_keys
from edge_agent.component import Component
from edge_agent.config import AgentConfig, Problem
from edge_agent.fleet.diagnostics import Doctor, Logs
from edge_agent.fleet.models import ModelUpdates
from edge_agent.fleet.redact import Redactor, config_secrets
from edge_agent.fleet.remote_config import MAX_CONFIG_BYTES, ConfigStatus, RemoteConfig
from edge_agent.fleet.transfer import Transfers
from edge_agent.security.bureau_command import Command

FLEET_DIR = "fleet"
MAX_MODEL_BYTES = 64 * 1024 * 1024


def attach(agent: Agent, config: AgentConfig, handlers: MutableMapping[str, CommandHandler], *,
           config_path: Path | None, warnings: Sequence[Problem]) -> list[Component]:
    """Add the `config`, `model`, `logs` and `doctor` handlers; returns the components to register."""
    data_dir = agent.data_dir
    fleet_dir = data_dir / FLEET_DIR

    def components() -> Mapping[str, Mapping[str, Any]]:
        comps: Mapping[str, Mapping[str, Any]] = agent.status_payload()["components"]
        return comps

    handlers["logs"] = Logs(data_dir, lambda: Redactor(config_secrets(config)))
    handlers["doctor"] = Doctor(config, config_path, warnings, components)
    handlers["model"] = ModelUpdates(data_dir / "models", Transfers(fleet_dir / "incoming", MAX_MODEL_BYTES),
                                     selftest_dir=fleet_dir / "selftest")
    if config_path is None:
        def no_file(c: Command) -> AckResult:
            return AckResult("refused", "unavailable", "this agent's config did not come from a file")

        handlers["config"] = no_file
        return []
    path = Path(config_path).resolve()
    handlers["config"] = RemoteConfig(
        path, config, Transfers(fleet_dir / "incoming", MAX_CONFIG_BYTES), restart=agent.request_restart,
        components=components, trusted_key_ids=lambda new: set(load_trusted_keys(new)), now=agent.clock.now,
        current_warnings=warnings)
    status = ConfigStatus(path, fleet_dir / "config-state.json", agent.publish, agent.publish_status,
                          agent.request_restart, components, agent.clock.now, config.site.timezone,
                          info=agent.config_info)
    return [status]
