"""Reproduce the shipped heads: `python -m detectors.training.train_heads` (numpy only, no TensorFlow)."""
