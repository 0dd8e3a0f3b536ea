"""The bus over an MQTT 5 broker, for roles running in separate processes (`CHARGEOPS_MQTT_URL`)."""

from telemetry.mqtt.bus import BusTuning, MqttBus
from telemetry.mqtt.client import Broker, NoSubscriber, backoff
from telemetry.mqtt.events import decode_batch, encode_batches

__all__ = ["Broker", "BusTuning", "MqttBus", "NoSubscriber", "backoff", "decode_batch", "encode_batches"]
