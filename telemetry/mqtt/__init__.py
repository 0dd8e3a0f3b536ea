"""The bus over an MQTT 5 broker, for roles running in separate processes (`CHARGEOPS_MQTT_URL`)."""

from telemetry.mqtt.bus import MqttBus, decode_batch, encode_batches
from telemetry.mqtt.client import Broker, backoff

__all__ = ["Broker", "MqttBus", "backoff", "decode_batch", "encode_batches"]
