"""The OCPP central system: holds charger WebSockets, speaks 1.6J / 2.0.1 / 2.1, emits neutral events."""
