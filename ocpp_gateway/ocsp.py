"""OCSP for ISO 15118 certificates (OCPP 2.x C07 Authorize, M06 GetCertificateStatus): a client that asks the
responder a station names (or the operator's, `ocsp_responder_url`, instead: an OCSP proxy or a lab's
responder) about one certificate, checks the answer and keeps it until its nextUpdate.

A station sends the certificate's OCSP CertID (hash algorithm, issuer name and key hashes, serial number) and
usually the responder's URL. The request is an RFC 6960 OCSPRequest built from those hashes, POSTed as DER.
Every responder URL passes the SSRF rule (`chargeops.urls`: private addresses only with
`--allow-private-urls`, the request goes to the address that was checked, no redirects). The whole lookup is
bounded by `pki_timeout`, so a slow responder cannot hold the charger's call.

An answer counts only when it is a successful response for exactly the CertID asked about, current
(thisUpdate not in the future, nextUpdate not past) and signed by a certificate it carries that is the
issuer itself (its key hash is the CertID's issuerKeyHash) or a delegated responder (OCSPSigning EKU, issued
under the CertID's issuer name). When the issuer's certificate is known (a contract certificate chain checked
centrally, or a root of the contract root store) the delegated responder's certificate must also be signed by
the issuer's key; when it is not (a station sends only the CertID's hashes) that signature cannot be checked,
and the station checks the DER it is given (M06).
Answers are cached until their nextUpdate (none: not cached), at most `CACHE_ENTRIES`, least recently used
first out; concurrent lookups of one certificate share one request.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from chargeops import clock
from chargeops.urls import FetchError, destination, fetch_bounded

log = logging.getLogger("chargeops.gateway.ocsp")

CACHE_ENTRIES = 10_000
MAX_RESPONSE_BYTES = 64 * 1024
CLOCK_SKEW = timedelta(minutes=5)  # a responder's clock a little ahead is not a forgery
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
Status = Literal["good", "revoked", "unknown"]


class OcspFailure(Exception):
    """No usable answer: bad request data, no responder, refused URL, timeout, or an answer that does not
    hold up. The message says which (for the log; chargers get Failed / CertChainError)."""


@dataclass(frozen=True, slots=True)
class CertId:
    """OCPP OCSPRequestDataType, parsed: what identifies one certificate to its issuer's responder."""

    algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int

    @classmethod
    def of(cls, data: dict[str, Any]) -> CertId:
        """From OCPP `ocspRequestData` / `iso15118CertificateHashData` (hex strings); OcspFailure for data
        no responder could answer."""
        algorithm = data.get("hashAlgorithm", "")
        if algorithm not in HASHES:
            raise OcspFailure(f"hash algorithm {algorithm!r} not supported")
        try:
            name_hash = bytes.fromhex(data["issuerNameHash"])
            key_hash = bytes.fromhex(data["issuerKeyHash"])
            serial = int(data["serialNumber"], 16)
        except (KeyError, TypeError, ValueError):
            raise OcspFailure("issuer hashes and serial number must be hexadecimal") from None
        size = HASHES[algorithm].digest_size
        if len(name_hash) != size or len(key_hash) != size:
            raise OcspFailure(f"issuer hashes must be {size} bytes for {algorithm}")
        return cls(algorithm, name_hash, key_hash, serial)

    def request_der(self) -> bytes:
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            self.issuer_name_hash, self.issuer_key_hash, self.serial_number, HASHES[self.algorithm]()
        )
        return builder.build().public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    """A checked responder answer: the certificate's status and the response as sent (DER)."""

    status: Status
    der: bytes
    next_update: datetime | None

    @property
    def base64(self) -> str:
        return base64.b64encode(self.der).decode()


def check_response(
    der: bytes, cert_id: CertId, now: datetime, issuer: x509.Certificate | None = None
) -> OcspAnswer:
    """The answer in `der` about `cert_id`, if it holds up (see the module docstring); else OcspFailure.
    `issuer`: the certificate of the CertID's issuer, when known."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        raise OcspFailure("the responder's answer is not an OCSP response") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspFailure(f"the responder answered {response.response_status.name}")
    single = next((s for s in response.responses if _same_cert(s, cert_id)), None)
    if single is None:
        raise OcspFailure("the responder's answer is about another certificate")
    if single.this_update_utc > now + CLOCK_SKEW:
        raise OcspFailure("the responder's answer is dated in the future")
    next_update = single.next_update_utc
    if next_update is not None and next_update < now:
        raise OcspFailure("the responder's answer is out of date")
    _check_signature(response, cert_id, issuer)
    status: Status = {
        ocsp.OCSPCertStatus.GOOD: "good",
        ocsp.OCSPCertStatus.REVOKED: "revoked",
    }.get(single.certificate_status, "unknown")  # type: ignore[assignment]
    return OcspAnswer(status, der, next_update)


def _same_cert(single: ocsp.OCSPSingleResponse, cert_id: CertId) -> bool:
    return (
        single.hash_algorithm.name.upper() == cert_id.algorithm
        and single.issuer_name_hash == cert_id.issuer_name_hash
        and single.issuer_key_hash == cert_id.issuer_key_hash
        and single.serial_number == cert_id.serial_number
    )


def key_hash(cert: x509.Certificate, algorithm: str) -> bytes:
    """RFC 6960 issuerKeyHash of a certificate's key: the hash of its subjectPublicKey bit string (the DER
    SubjectPublicKeyInfo without its algorithm header)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bits = _spki_bit_string(spki)
    digest = hashes.Hash(HASHES[algorithm]())
    digest.update(bits)
    return digest.finalize()


def _spki_bit_string(spki: bytes) -> bytes:
    """The subjectPublicKey BIT STRING's content (without its unused-bits byte) of a DER SPKI."""
    pos = _skip_header(spki, 0)  # into the outer SEQUENCE
    pos = _skip_header(spki, pos, skip_content=True)  # past the AlgorithmIdentifier
    start = _skip_header(spki, pos)  # into the BIT STRING
    return spki[start + 1 :]


def _skip_header(der: bytes, pos: int, *, skip_content: bool = False) -> int:
    length = der[pos + 1]
    head = 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[pos + 2 : pos + 2 + count], "big")
        head += count
    return pos + head + (length if skip_content else 0)


def _name_hash(name: x509.Name, algorithm: str) -> bytes:
    digest = hashes.Hash(HASHES[algorithm]())
    digest.update(name.public_bytes())
    return digest.finalize()


def _check_signature(response: ocsp.OCSPResponse, cert_id: CertId, issuer: x509.Certificate | None) -> None:
    for cert in response.certificates:
        if key_hash(cert, cert_id.algorithm) == cert_id.issuer_key_hash:
            pass  # the issuer signs its own answers
        elif _name_hash(cert.issuer, cert_id.algorithm) == cert_id.issuer_name_hash and _ocsp_signer(cert):
            if issuer is not None and not signed_by(cert, issuer):
                continue  # the issuer's name, another key: a forged responder certificate
        else:
            continue
        if _verifies(cert, response):
            return
    raise OcspFailure("the responder's answer is not signed by the certificate's issuer or its responder")


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`issuer`'s name is `cert`'s issuer and its key signed `cert`."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _ocsp_signer(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in usage


def _verifies(cert: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    key = cert.public_key()
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(response.signature, response.tbs_response_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True


# (certificate, responder URL, the issuer's certificate fingerprint when it was known to check the answer)
CacheKey = tuple[CertId, str, bytes | None]


class OcspClient:
    """One per gateway process: the bounded cache and the HTTP client are shared by every charger."""

    def __init__(self, *, responder_url: str | None, timeout: float, allow_private: bool) -> None:
        self._responder_url = responder_url  # the operator's: asked instead of the one the station names
        self._timeout = timeout
        self._allow_private = allow_private
        self._cache: OrderedDict[CacheKey, OcspAnswer] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Future[OcspAnswer]] = {}
        self._client: httpx.AsyncClient | None = None

    async def status(self, data: dict[str, Any], *, issuer: x509.Certificate | None = None) -> OcspAnswer:
        """The checked answer about the certificate `data` (OCPP OCSPRequestDataType) identifies, from the
        cache or the responder; OcspFailure when there is none within the timeout. `issuer`: the issuer's
        certificate when known (a delegated responder's certificate is then checked against it)."""
        cert_id = CertId.of(data)
        url = self._responder_url or data.get("responderURL")
        if not url:
            raise OcspFailure("no responder URL: the station sent none and none is configured")
        key = (cert_id, url, issuer.fingerprint(hashes.SHA256()) if issuer is not None else None)
        now = clock.now()
        cached = self._cache.get(key)
        if cached is not None and cached.next_update is not None and cached.next_update > now:
            self._cache.move_to_end(key)
            return cached
        self._cache.pop(key, None)
        waiting = self._inflight.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        fut: asyncio.Future[OcspAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            async with asyncio.timeout(self._timeout):
                der = await self._post(url, cert_id.request_der())
                answer = check_response(der, cert_id, clock.now(), issuer)
        except TimeoutError:
            failure = OcspFailure(f"no answer from {url} within {self._timeout:g} s")
            fut.set_exception(failure)
            raise failure from None
        except OcspFailure as exc:
            fut.set_exception(exc)
            raise
        else:
            fut.set_result(answer)
            self._remember(key, answer)
            return answer
        finally:
            del self._inflight[key]
            if not fut.done():  # this lookup was cancelled: those waiting for it get a failure, not hang
                fut.set_exception(OcspFailure("lookup abandoned"))
            fut.exception()  # retrieved: nobody else waiting is not an error

    def _remember(self, key: CacheKey, answer: OcspAnswer) -> None:
        if answer.next_update is None:
            return  # RFC 6960: newer information is always available
        self._cache[key] = answer
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def _post(self, url: str, body: bytes) -> bytes:
        if not url.lower().startswith(("http://", "https://")):
            raise OcspFailure(f"responder URL must be http or https: {url[:80]!r}")
        dest = await destination(url, self._allow_private)
        if isinstance(dest, str):
            raise OcspFailure(f"responder URL refused: {dest}")
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._timeout)
        headers = {"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"}
        headers["Host"] = dest.host
        extensions = {"sni_hostname": dest.sni} if dest.sni else None
        req = self._client.build_request(
            "POST", dest.url, content=body, headers=headers, extensions=extensions
        )
        try:
            return await fetch_bounded(self._client, req, url, MAX_RESPONSE_BYTES)
        except FetchError as exc:
            raise OcspFailure(str(exc)) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
