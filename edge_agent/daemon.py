"""Builds the agent from a config: which components run depends on which sections exist."""

from __future__ import annotations

from edge_agent.app import Agent
from edge_agent.config import AgentConfig


def build_agent(config: AgentConfig) -> Agent:
    agent = Agent(config)
    return agent
