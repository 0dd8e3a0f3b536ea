"""Central contract certificate validation (OCPP 2.x C07.FR.06, TC_C_52): a station that cannot check an EV's
contract certificate itself sends the chain in Authorize `certificate` (PEM, leaf first, up to but not
including the root), and the central system checks it against its own trust store of V2G and MO
(eMobility operator) root certificates (`--contract-roots`, and the built-in CA's root with
`--contract-roots-ca`).

Pure: no I/O but reading the store's files (at start, and when they change: `pki.ReloadingRoots`). The path
is built from the leaf through the chain's sub-CAs to a trusted root by name and signature (the chain's own
order is not trusted, extra certificates are ignored), at most `MAX_PATH` certificates long as ISO 15118-2
allows (contract certificate, two MO sub-CAs, root). Every certificate on it must be inside its validity;
every CA above the leaf a CA (basic constraints, path length respected) allowed to sign certificates (key
usage keyCertSign); the leaf no CA, with digitalSignature when it states a key usage. The leaf's own
profile and eMAID are `contract_leaf`'s. Revocation is the caller's (`Pki`): each certificate below the root
by OCSP at the URL its Authority Information Access names (or its CRL when it names none), its issuer known
from the path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AuthorityInformationAccessOID

from ocpp_gateway.ocsp import key_hash, signed_by

MAX_PATH = 4  # ISO 15118-2: contract certificate, MO Sub-CA 2, MO Sub-CA 1, V2G / MO root
PEM_SUFFIXES = (".pem", ".crt", ".cer")


class ContractRootsError(ValueError):
    """The configured root store does not load (a start-up error)."""


class ChainProblem(Exception):
    """The chain does not hold: `verdict` is the AuthorizeCertificateStatus it earns (CertificateExpired or
    CertChainError); the message says why (for the log)."""

    def __init__(self, verdict: str, why: str) -> None:
        super().__init__(why)
        self.verdict = verdict


def _read_pem(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ContractRootsError(f"{path}: not readable as PEM certificates ({exc})") from None


def load_roots(paths: Iterable[Path]) -> tuple[x509.Certificate, ...]:
    """The root certificates in `paths` (PEM files, or directories of *.pem / *.crt / *.cer files);
    ContractRootsError when one does not load or holds something that is not a self-signed CA."""
    roots: list[x509.Certificate] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in PEM_SUFFIXES and p.is_file())
        else:
            files = [path]
        for file in files:
            for cert in _read_pem(file):
                if not _is_ca(cert) or cert.issuer != cert.subject:
                    name = cert.subject.rfc4514_string()
                    raise ContractRootsError(f"{file}: {name!r} is not a self-signed CA certificate")
                roots.append(cert)
    return tuple(roots)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The V2G and MO roots contract certificate chains must end in (none: central validation is off)."""

    roots: tuple[x509.Certificate, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.roots)

    def issuer_for(self, algorithm: str, issuer_key_hash: bytes) -> x509.Certificate | None:
        """The root whose key has this OCSP issuerKeyHash (to check a delegated responder's certificate)."""
        return next((r for r in self.roots if key_hash(r, algorithm) == issuer_key_hash), None)

    def path(self, chain_pem: str, now: datetime) -> list[x509.Certificate]:
        """The checked path from the chain's leaf to a trusted root (leaf first, root last); ChainProblem
        when there is none that holds."""
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode())
        except ValueError:
            raise ChainProblem("CertChainError", "the certificate is not a PEM certificate chain") from None
        path = self._build(chain[0], chain[1:])
        _check(path, now)
        return path

    def _build(self, leaf: x509.Certificate, pool: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        path = [leaf]
        while len(path) < MAX_PATH:
            current = path[-1]
            root = next((r for r in self.roots if signed_by(current, r)), None)
            if root is not None:
                return [*path, root]
            issuer = next((c for c in pool if c not in path and signed_by(current, c)), None)
            if issuer is None:
                why = f"no trusted issuer of {current.subject.rfc4514_string()!r} in the chain or the roots"
                raise ChainProblem("CertChainError", why)
            path.append(issuer)
        raise ChainProblem("CertChainError", f"no trusted root within {MAX_PATH} certificates")


def _usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _check(path: list[x509.Certificate], now: datetime) -> None:
    for cert in path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            why = f"{cert.subject.rfc4514_string()!r} is outside its validity"
            raise ChainProblem("CertificateExpired", why)
    leaf = path[0]
    if _is_ca(leaf):
        raise ChainProblem("CertChainError", "the contract certificate is a CA certificate")
    usage = _usage(leaf)
    if usage is not None and not usage.digital_signature:
        raise ChainProblem("CertChainError", "the contract certificate's key usage lacks digitalSignature")
    for below, ca in enumerate(path[1:]):  # `below`: CAs between this one and the leaf
        name = ca.subject.rfc4514_string()
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise ChainProblem("CertChainError", f"{name!r} has no basic constraints") from None
        if not constraints.ca:
            raise ChainProblem("CertChainError", f"{name!r} is not a CA but signed a certificate")
        if constraints.path_length is not None and below > constraints.path_length:
            raise ChainProblem("CertChainError", f"{name!r}: path length {constraints.path_length} exceeded")
        usage = _usage(ca)
        if (usage is None and ca is not path[-1]) or (usage is not None and not usage.key_cert_sign):
            raise ChainProblem("CertChainError", f"{name!r} may not sign certificates (key usage)")


def ocsp_url(cert: x509.Certificate) -> str | None:
    """The OCSP responder URL the certificate's Authority Information Access names, if any."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in access:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            return location.value
    return None


def hash_data(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, str]:
    """OCPP OCSPRequestDataType of `cert` (SHA-256), as a station would send it, with its OCSP URL."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(cert.issuer.public_bytes())
    data = {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": digest.finalize().hex(),
        "issuerKeyHash": key_hash(issuer, "SHA256").hex(),
        "serialNumber": format(cert.serial_number, "x"),
    }
    url = ocsp_url(cert)
    if url is not None:
        data["responderURL"] = url
    return data
