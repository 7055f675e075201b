"""Hardware adapters: Modbus meters, cameras, speaker, microphone, GPIO.

Drivers produce `Reading`s and `Frame`s and know nothing of MQTT, rules or thresholds.
They import neither `edge_agent` nor `detectors`.
"""

from drivers.types import Frame, Quality, Reading

__all__ = ["Frame", "Quality", "Reading"]
