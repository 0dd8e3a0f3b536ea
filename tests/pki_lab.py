"""A certificate authority and its OCSP responder, made in the test: certificates issued with `cryptography`,
a real HTTP server on a loopback port answering RFC 6960 requests signed by the CA (or by a forger), so the
gateway's OCSP client is tested against the wire, not against a mock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCa:
    """A CA (EC P-256) that issues leaf certificates and signs OCSP answers about them."""

    __test__ = False  # not a test class

    def __init__(self, cn: str = "chargeops test MO Sub-CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, serial: int, *, days: int = 30, expired: bool = False) -> x509.Certificate:
        now = datetime.now(UTC)
        start = now - timedelta(days=days + 2) if expired else now - timedelta(days=1)
        return (
            x509.CertificateBuilder()
            .subject_name(_name(f"EMAID{serial}"))
            .issuer_name(self.cert.subject)
            .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .sign(self.key, hashes.SHA256())
        )

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


@dataclass
class OcspResponder:
    """An OCSP responder over HTTP for `ca`: serials in `revoked` are revoked, in `good` good, others
    unknown; `delay` holds each answer (a slow responder); `forger` signs instead of the CA."""

    ca: TestCa
    good: set[int] = field(default_factory=set)
    revoked: set[int] = field(default_factory=set)
    delay: float = 0.0
    next_update: timedelta | None = timedelta(hours=1)
    forger: TestCa | None = None
    requests: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ocsp"

    async def start(self) -> OcspResponder:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            self.requests += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = self.answer(ocsp.load_der_ocsp_request(body))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
                + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def answer(self, request: ocsp.OCSPRequest) -> bytes:
        now = datetime.now(UTC)
        serial = request.serial_number
        if serial in self.revoked:
            status, revoked_at = ocsp.OCSPCertStatus.REVOKED, now - timedelta(days=1)
        elif serial in self.good:
            status, revoked_at = ocsp.OCSPCertStatus.GOOD, None
        else:
            status, revoked_at = ocsp.OCSPCertStatus.UNKNOWN, None
        signer = self.forger or self.ca
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
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
            .certificates([signer.cert])
        )
        return builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
