"""Rules: turn figures into violations with a life cycle (started / ongoing / ended)."""

from edge_agent.rules.engine import RuleEngine
from edge_agent.rules.schedule import Schedule

__all__ = ["RuleEngine", "Schedule"]
