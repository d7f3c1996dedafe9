"""firegate edge agent: field-bus drivers, the power-safe outbox and the MQTT uplink."""

__version__ = "0.1.0"
