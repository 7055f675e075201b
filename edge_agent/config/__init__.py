"""Config: one YAML file validated into typed, immutable sections."""

from edge_agent.config.loader import ConfigError, Loaded, Problem, config_warnings, load_checked, load_config
from edge_agent.config.root import AgentConfig

__all__ = ["AgentConfig", "ConfigError", "Loaded", "Problem", "config_warnings", "load_checked", "load_config"]
