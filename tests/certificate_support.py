"""What the certificate tests share: CSRs with real keys, a server certificate for wss://, chargeops started
with its built-in CA as the client CA, a raw station over wss:// and the stored rows."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from chargeops.db.certificate_models import IssuedCertificate
from ops.cli import app
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger

ORG = "Acme Charging"
ADMIN = {"Authorization": "Bearer test-admin-token"}
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def make_csr(cn: str, org: str = ORG, key: Key | None = None) -> tuple[str, Key]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def ca_lab(tmp_path: Path) -> Path:
    """A server certificate for 127.0.0.1 (self-signed) and a CA directory for the built-in CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(key_pem(key))
    return tmp_path


async def start(start_runtime: StartRuntime, ca_lab: Path, db: str, **kw: Any) -> Runtime:
    """chargeops over wss:// whose client CA is its own built-in CA (made before the server loads it)."""
    ca_dir = ca_lab / "ca"
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, app, ["ca", "root", "--ca-dir", str(ca_dir), "--ca-organization", ORG]
    )
    assert result.exit_code == 0 and "BEGIN CERTIFICATE" in result.output, result.output
    return await start_runtime(
        db,
        tls_cert=ca_lab / "server.pem",
        tls_key=ca_lab / "server.key",
        tls_client_ca=ca_dir / "ca.pem",
        ca_dir=ca_dir,
        ca_organization=ORG,
        **kw,
    )


@asynccontextmanager
async def station(
    runtime: Runtime,
    ca_lab: Path,
    cid: str,
    protocol: str = "ocpp2.0.1",
    cert: tuple[Path, Path] | None = None,
) -> AsyncIterator[RawCharger]:
    ctx = ssl.create_default_context(cafile=str(ca_lab / "server.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with connect(f"wss://127.0.0.1:{port}/ocpp/{cid}", subprotocols=[protocol], ssl=ctx) as ws:  # type: ignore[list-item]
        cp = RawCharger(ws, protocol)
        assert (await cp.boot())["status"] == "Accepted"
        yield cp


async def expect_call(cp: RawCharger, action: str) -> list[Any]:
    call = await asyncio.wait_for(cp.recv(), 10)
    assert call[0] == 2 and call[2] == action, call
    return call


async def answer(cp: RawCharger, call: list[Any], payload: dict[str, Any]) -> None:
    await cp.ws.send(json.dumps([3, call[1], payload]))


async def rows(runtime: Runtime, entity: Any, cid: str) -> list[Any]:
    async with runtime.sessions() as s:
        return list(
            (await s.scalars(select(entity).where(entity.charger_id == cid).order_by(entity.id))).all()
        )


async def settled(runtime: Runtime, cid: str) -> IssuedCertificate:
    """The newest certificate issued to `cid`, once the station's CertificateSigned answer is stored."""
    for _ in range(100):
        issued = await rows(runtime, IssuedCertificate, cid)
        if issued and issued[-1].delivery is not None:
            return issued[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no delivered certificate for {cid}")


def leaf(chain: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain.encode())[0]


def chains_to_the_ca(cert: x509.Certificate, ca_lab: Path) -> bool:
    root = x509.load_pem_x509_certificate((ca_lab / "ca" / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(root)
    return True
