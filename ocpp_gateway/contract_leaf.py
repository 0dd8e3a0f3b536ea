"""The contract certificate itself (the leaf of an Authorize `certificate` chain): the ISO 15118 certificate
profile of its key and signature, and the eMAID it certifies.

* Key: ECDSA on secp256r1 (ISO 15118-2 [V2G2-007]), or secp521r1 or Ed448 (ISO 15118-20). Any other key (RSA,
  another curve, Ed25519) → CertChainError: the certificate is not a contract certificate.
* Signature (by the MO sub-CA): ecdsa-with-SHA256 (ISO 15118-2 [V2G2-006]), ecdsa-with-SHA512 or Ed448
  (ISO 15118-20). Any other (SHA-1, SHA-384, RSA) → SignatureError.
* eMAID: the subject's common name must be the eMAID the station sent as idToken, compared as ISO 15118-2
  Annex H / DIN SPEC 91286 write it: case-insensitive, hyphens optional (`DE-8AA-1A2B3C4D5-6` is
  `de8aa1a2b3c4d56`). A certificate of another eMAID (or none) → CertChainError: the chain does not
  authenticate the token presented.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from ocpp_gateway.contract_chain import ChainProblem

CURVES: dict[type[ec.EllipticCurve], str] = {ec.SECP256R1: "ISO 15118-2", ec.SECP521R1: "ISO 15118-20"}
SIGNATURES = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ISO 15118-2",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ISO 15118-20",
    SignatureAlgorithmOID.ED448: "ISO 15118-20",
}
ALLOWED = "ECDSA secp256r1 with SHA-256 (ISO 15118-2), or secp521r1 with SHA-512 or Ed448 (ISO 15118-20)"


def normalise_emaid(emaid: str) -> str:
    """An eMAID as compared: without hyphens, upper case (ISO 15118 eMAIDs are case-insensitive)."""
    return emaid.replace("-", "").strip().upper()


def emaid_of(leaf: x509.Certificate) -> str | None:
    """The eMAID a contract certificate certifies: its subject's common name."""
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) else None


def _key_problem(leaf: x509.Certificate) -> str | None:
    key = leaf.public_key()
    if isinstance(key, ed448.Ed448PublicKey):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if type(key.curve) in CURVES:
            return None
        return f"an ECDSA key on {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA-{key.key_size} key"
    return "an Ed25519 key" if isinstance(key, ed25519.Ed25519PublicKey) else "a key of another kind"


def check_leaf(leaf: x509.Certificate, emaid: str | None) -> None:
    """ChainProblem when the contract certificate's key or signature is not of the ISO 15118 profile, or
    it certifies another eMAID than `emaid` (None: not compared)."""
    if (key := _key_problem(leaf)) is not None:
        raise ChainProblem("CertChainError", f"the contract certificate has {key}; allowed: {ALLOWED}")
    if leaf.signature_algorithm_oid not in SIGNATURES:
        name = getattr(leaf.signature_algorithm_oid, "_name", leaf.signature_algorithm_oid.dotted_string)
        raise ChainProblem("SignatureError", f"the contract certificate is signed {name}; allowed: {ALLOWED}")
    if emaid is None:
        return
    certified = emaid_of(leaf)
    if certified is None or normalise_emaid(certified) != normalise_emaid(emaid):
        why = f"the contract certificate is of eMAID {certified!r}, the station presented {emaid[:40]!r}"
        raise ChainProblem("CertChainError", why)
