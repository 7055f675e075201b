"""`edge-agent doctor`: what a technician checks before leaving the crane."""
