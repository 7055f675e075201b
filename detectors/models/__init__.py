"""Shipped models and their cards (data, not code); a site may point detectors.<name>.model elsewhere."""
