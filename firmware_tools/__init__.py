"""Field tools for technicians: meter simulators, bus scans, meter set-up, key provisioning."""

from importlib.metadata import PackageNotFoundError, version

try:  # the same distribution as the agent (edge-agent): one version for both programs
    __version__ = version("edge-agent")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
