"""A certificate authority and its OCSP responder, made in the test: certificates issued with `cryptography`,
a real HTTP server on a loopback port answering RFC 6960 requests signed by the CA (or by a forger, or a
delegated responder), so the gateway's OCSP client is tested against the wire, not against a mock. CAs can be
stacked (root, MO sub-CAs) to make ISO 15118 contract certificate chains."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes as PublicKey
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, sign: bool = False, certs: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(sign, False, False, False, False, certs, certs, False, False)


def _aia(url: str) -> x509.AuthorityInformationAccess:
    location = x509.UniformResourceIdentifier(url)
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, location)]
    )


class TestCa:
    """A CA (EC P-256) that issues leaf certificates and signs OCSP answers about them: a self-signed root,
    or a sub-CA of `parent` (naming `ocsp_url` as where its own status is asked)."""

    __test__ = False  # not a test class

    def __init__(
        self,
        cn: str = "chargeops test MO Sub-CA",
        *,
        parent: TestCa | None = None,
        ocsp_url: str | None = None,
        path_length: int | None = None,
    ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn) if parent is None else parent.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_usage(certs=True), critical=True)
        )
        if ocsp_url is not None:
            builder = builder.add_extension(_aia(ocsp_url), critical=False)
        self.cert: x509.Certificate = builder.sign(parent.key if parent else self.key, hashes.SHA256())

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject

    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        serial: int,
        *,
        days: int = 30,
        expired: bool = False,
        ocsp_url: str | None = None,
        emaid: str | None = None,
        key: PublicKey | None = None,
        crl_url: str | None = None,
        algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
    ) -> x509.Certificate:
        """A contract certificate (CN = `emaid`, else EMAID<serial>; an EC P-256 key unless `key`), naming
        `ocsp_url` for its status and `crl_url` as its CRL distribution point when given; signed with SHA-256
        unless `algorithm`."""
        now = datetime.now(UTC)
        start = now - timedelta(days=days + 2) if expired else now - timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(emaid or f"EMAID{serial}"))
            .issuer_name(self.cert.subject)
            .public_key(key or ec.generate_private_key(ec.SECP256R1()).public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign=True), critical=True)
        )
        if ocsp_url is not None:
            builder = builder.add_extension(_aia(ocsp_url), critical=False)
        if crl_url is not None:
            point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        return builder.sign(self.key, algorithm or hashes.SHA256())

    def crl(
        self, revoked: set[int], *, next_update: timedelta = timedelta(hours=1), signer: TestCa | None = None
    ) -> bytes:
        """This CA's CRL (DER) listing `revoked`, valid until now + `next_update` (negative: out of date),
        signed by this CA's key or (`signer`) another's under this CA's name."""
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - timedelta(hours=2))
            .next_update(now + next_update)
        )
        for serial in sorted(revoked):
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - timedelta(hours=1))
            )
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign((signer or self).key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.DER)

    def responder(self, *, forged: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A delegated OCSP responder's certificate (OCSPSigning) and key, issued under this CA's name:
        signed by this CA's key, or (`forged`) by a key of its own that only borrows the name."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("delegated OCSP responder"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
            .sign(key if forged else self.key, hashes.SHA256())
        )
        return cert, key

    def hash_data(self, cert: x509.Certificate, responder_url: str | None = None) -> dict[str, Any]:
        """OCPP OCSPRequestDataType of `cert` (what a station sends)."""
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, self.cert, hashes.SHA256()).build()
        data = {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": request.issuer_name_hash.hex(),
            "issuerKeyHash": request.issuer_key_hash.hex(),
            "serialNumber": format(cert.serial_number, "x"),
        }
        if responder_url is not None:
            data["responderURL"] = responder_url
        return data


class LoopbackHttp:
    """A one-request-per-connection HTTP/1.1 server on a loopback port; subclasses implement `_serve`."""

    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class LoopbackPostServer(LoopbackHttp):
    """Takes one POST per connection and answers what `respond` gives for its body (content type, bytes)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def respond(self, body: bytes) -> tuple[str, bytes]:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            content_type, answer = await self.respond(await reader.readexactly(length))
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n".encode()
                + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@dataclass
class OcspResponder(LoopbackPostServer):
    """An OCSP responder over HTTP for `ca` (and the CAs in `more`: each answers about what it issued):
    serials in `revoked` are revoked, in `good` good, others unknown; `delay` holds each answer (a slow
    responder); `forger` signs instead of the CA, `delegate` (certificate, key) as its delegated responder."""

    ca: TestCa
    good: set[int] = field(default_factory=set)
    revoked: set[int] = field(default_factory=set)
    delay: float = 0.0
    next_update: timedelta | None = timedelta(hours=1)
    forger: TestCa | None = None
    more: list[TestCa] = field(default_factory=list)
    delegate: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ocsp"

    async def respond(self, body: bytes) -> tuple[str, bytes]:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return "application/ocsp-response", self.answer(ocsp.load_der_ocsp_request(body))

    def _issuer(self, request: ocsp.OCSPRequest) -> TestCa:
        for ca in (self.ca, *self.more):
            asked = ocsp.OCSPRequestBuilder().add_certificate(ca.cert, ca.cert, request.hash_algorithm)
            if asked.build().issuer_key_hash == request.issuer_key_hash:
                return ca
        return self.ca

    def answer(self, request: ocsp.OCSPRequest) -> bytes:
        now = datetime.now(UTC)
        serial = request.serial_number
        if serial in self.revoked:
            status, revoked_at = ocsp.OCSPCertStatus.REVOKED, now - timedelta(days=1)
        elif serial in self.good:
            status, revoked_at = ocsp.OCSPCertStatus.GOOD, None
        else:
            status, revoked_at = ocsp.OCSPCertStatus.UNKNOWN, None
        signer = self.forger or self._issuer(request)
        cert, key = self.delegate or (signer.cert, signer.key)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                request.issuer_name_hash,
                request.issuer_key_hash,
                serial,
                request.hash_algorithm,
                status,
                now - timedelta(minutes=1),
                now + self.next_update if self.next_update is not None else None,
                revoked_at,
                None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
            .certificates([cert])
        )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class CrlServer(LoopbackHttp):
    """A CRL distribution point over HTTP on a loopback port: GET /name answers `files[name]` (404 if none),
    counting the requests per name."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            name = head.split(b" ", 2)[1].decode().lstrip("/")
            self.requests[name] = self.requests.get(name, 0) + 1
            body = self.files.get(name)
            status = "200 OK" if body is not None else "404 Not Found"
            body = body or b""
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/pkix-crl\r\n".encode()
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
