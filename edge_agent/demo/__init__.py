"""The demo site: every part of a real box, simulated, on one laptop."""
