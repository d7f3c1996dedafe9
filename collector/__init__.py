"""firegate collector: MQTT in, InfluxDB out, nothing acknowledged before it is stored."""
