"""edge-bureau: the bureau's side of edge-agent (ingest, store, verification, web console, signed commands).

Imports run one way: `bureau` uses the agent's message formats, encoders and verifiers
(`edge_agent.security`, `edge_agent.evidence`, `edge_agent.uplink.topics`); nothing in
`edge_agent`, `drivers` or `detectors` imports `bureau`, and no box ever needs it.
"""

__version__ = "0.1.0"
