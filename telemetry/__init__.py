"""The event bus (in-process or MQTT), ingest into the database, and Prometheus metrics."""
