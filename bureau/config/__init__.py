"""The bureau's YAML config: one file, validated at start with the agent's line-exact errors."""

from bureau.config.loader import load_config
from bureau.config.model import BureauConfig, DustLimit, LimitsConfig, SiteConfig
from edge_agent.config.loader import ConfigError, Problem

__all__ = ["BureauConfig", "ConfigError", "DustLimit", "LimitsConfig", "Problem", "SiteConfig", "load_config"]
