"""The bus over an MQTT 5 broker, for roles running in separate processes (`CHARGEOPS_MQTT_URL`).

The topic tree, the message formats and the guarantees (acks, sessions, the spool, one executor per
command) are described once, in docs/bus.md. The modules:

- `client`: connections to the broker (its URL, TLS and login: `chargeops/broker.py`); the only module
  touching paho or aiomqtt internals
- `topics`: the topic names
- `events`: event batches on the wire, publishing them (linger, spool, replay), non-durable listeners
- `consumer`: a durable shared subscription that acks in arrival order after the store (also used by
  `telemetry/site_telemetry.py`)
- `commands`: hold notices, running a command on the holding gateway, request/reply
- `bus`: `MqttBus`, composing the above, and its `BusTuning`
"""

from telemetry.mqtt.bus import BusTuning, MqttBus
from telemetry.mqtt.client import Broker, NoSubscriber, backoff
from telemetry.mqtt.events import decode_batch, encode_batches

__all__ = ["Broker", "BusTuning", "MqttBus", "NoSubscriber", "backoff", "decode_batch", "encode_batches"]
