"""The checks a station's certificate signing request must pass before any CA signs it (OCPP 2.0.1 A02/A03,
1.6 security whitepaper edition 2): a PEM CSR whose self-signature holds, naming the charge point id of the
connection it came on as CN and the operator's organization as O, with a key strong enough for OCPP's TLS
(RSA of 2048 bits or more, or an elliptic curve of 256 bits or more)."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from chargeops.pki.signer import CsrRejected

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


def _only(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = [str(a.value) for a in name.get_attributes_for_oid(oid)]
    return values[0] if len(values) == 1 else None


def check_csr(csr_pem: str, charger_id: str, organization: str) -> x509.CertificateSigningRequest:
    """The parsed CSR, if it may be signed for `charger_id`; raises CsrRejected saying why not."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise CsrRejected("not a PEM certificate signing request") from None
    try:
        key = csr.public_key()
        signed = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        raise CsrRejected("its key or signature algorithm is not supported") from None
    if not signed:
        raise CsrRejected("its signature does not match its key")
    cn = _only(csr.subject, NameOID.COMMON_NAME)
    if cn != charger_id:
        raise CsrRejected(f"CN is {cn!r}, not the charge point id {charger_id!r}")
    org = _only(csr.subject, NameOID.ORGANIZATION_NAME)
    if org != organization:
        raise CsrRejected(f"O is {org!r}, not the operator's organization {organization!r}")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRejected(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            raise CsrRejected(f"EC key of {key.curve.key_size} bits; at least {MIN_EC_BITS} needed")
    else:
        raise CsrRejected(f"{type(key).__name__} keys are not used by OCPP; RSA or EC only")
    return csr
