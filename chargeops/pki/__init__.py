"""Certificates for chargers: the `Signer` interface the gateway signs stations' CSRs through, the checks a
CSR must pass, and the built-in CA (`BuiltinCA`) for labs and small operators. An external CA is another
`Signer`."""

from chargeops.pki.csr import check_csr
from chargeops.pki.signer import (
    CERTIFICATE_TYPES,
    CHARGING_STATION,
    V2G,
    CsrRejected,
    Issued,
    Signer,
)

__all__ = [
    "CERTIFICATE_TYPES",
    "CHARGING_STATION",
    "V2G",
    "CsrRejected",
    "Issued",
    "Signer",
    "check_csr",
]
