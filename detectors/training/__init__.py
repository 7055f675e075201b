"""Reproduce the shipped models: `python -m detectors.training.train` (needs the `train` extra)."""
