"""Uplinks: everything that carries outbox messages to the bureau (MQTT; HJ 212 over TCP)."""
