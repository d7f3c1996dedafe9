"""Where the collector stores points: InfluxDB (influxdb-client) or the embedded SQLite store.

``open_sink(config)`` picks one; both implement :class:`Sink`. The InfluxDB sink is imported
lazily, so the collector runs without influxdb-client when no InfluxDB URL is configured.
"""

from collector.sinks.base import Sink, SinkError, open_sink
from collector.sinks.config import SinkConfig

__all__ = ["Sink", "SinkConfig", "SinkError", "open_sink"]
