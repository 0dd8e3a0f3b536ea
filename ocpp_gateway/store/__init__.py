"""Storage behind the gateway: the narrow interface sessions and the handshake use (`interface`) and its
database implementation (`sql`)."""

from ocpp_gateway.store.interface import ChargerAuth, Store, TokenStatus, TxProgress, TxRecord
from ocpp_gateway.store.progress import FLAG_KEY
from ocpp_gateway.store.sql import GatewayStore

__all__ = ["FLAG_KEY", "ChargerAuth", "GatewayStore", "Store", "TokenStatus", "TxProgress", "TxRecord"]
