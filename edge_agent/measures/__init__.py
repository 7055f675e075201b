"""Legal figures from meter readings: noise Leq/Lmax/Lmin/L_N/Ld/Ln, dust and weather means."""

from edge_agent.measures.engine import MeasureEngine
from edge_agent.measures.levels import leq_of, rank

__all__ = ["MeasureEngine", "leq_of", "rank"]
