"""What the gateway needs of a certificate authority, whichever it is (the built-in one, an external CA)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# The certificates a station asks to have signed (OCPP 2.x CertificateSigningUseEnumType, V2G20 only in 2.1;
# a 1.6 station asks only for its own, the charging station certificate).
CHARGING_STATION = "ChargingStationCertificate"
V2G = "V2GCertificate"
V2G20 = "V2G20Certificate"
CERTIFICATE_TYPES = (CHARGING_STATION, V2G, V2G20)


class CsrRejected(ValueError):
    """A CSR the CA will not sign; the message says why (logged, stored, and told a 2.x station)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate the CA signed: what is stored of it and the chain sent to the station."""

    serial: str  # hex, as `openssl x509 -serial` prints it
    certificate_type: str
    subject: str  # RFC 4514, e.g. "O=Acme,CN=CP001"
    not_before: datetime
    not_after: datetime
    chain_pem: str  # the leaf first, then any CA below the root (none for the built-in CA)


class Signer(Protocol):
    """Signs what a station asked for. Blocking (key operations, files): call it from a thread."""

    organization: str

    def sign(self, csr_pem: str, charger_id: str, certificate_type: str) -> Issued:
        """Check the CSR (`check_csr`) and sign it; raises CsrRejected."""
        ...

    def root_pem(self) -> str:
        """The root CA certificate stations' certificates chain to (the server's `--tls-client-ca`)."""
        ...
