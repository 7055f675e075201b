"""edge-agent: the on-site half of remote construction-site supervision."""

__version__ = "0.1.0"
