"""Config: one YAML file validated into typed, immutable sections."""

from edge_agent.config.loader import ConfigError, Problem, load_config
from edge_agent.config.root import AgentConfig

__all__ = ["AgentConfig", "ConfigError", "Problem", "load_config"]
