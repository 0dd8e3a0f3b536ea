"""The built-in certificate authority for labs and small operators: one self-signed root (EC P-256) in a
directory of its own, created on first use, that signs stations' CSRs (charging station and V2G
certificates alike) and can issue a station's first security-profile-3 client certificate with its key.

Files: `ca.key` (the root's private key, mode 0600, the directory 0700) and `ca.pem` (the root certificate:
give it to the gateway as `--tls-client-ca`, and to stations that should trust what it signed). Several
processes may share the directory: creation holds a lock, so they all load the same root.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chargeops import clock
from chargeops.pki.csr import check_csr
from chargeops.pki.signer import CHARGING_STATION, CsrRejected, Issued
from chargeops.settings import Settings

ROOT_DAYS = 3650
BACKDATE = timedelta(minutes=5)  # a station whose clock runs a little behind still sees a valid certificate
KEY_FILE, CERT_FILE = "ca.key", "ca.pem"
DEFAULT_DIR = "chargeops-ca"  # in the working directory, when --ca-dir is not given
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start (never briefly readable by others), replacing nothing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class BuiltinCA:
    """A `Signer` whose root lives in `directory`; `days` is the validity of what it signs."""

    def __init__(self, directory: Path, organization: str, days: int = 365) -> None:
        self.directory = directory
        self.organization = organization
        self.days = days
        self._root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None

    @classmethod
    def of(cls, settings: Settings) -> BuiltinCA:
        """The CA in `--ca-dir` (default ./chargeops-ca); nothing is made until it is first used."""
        directory = settings.ca_dir or Path.cwd() / DEFAULT_DIR
        return cls(directory, settings.ca_organization, settings.ca_certificate_days)

    @property
    def root_path(self) -> Path:
        return self.directory / CERT_FILE

    def root_pem(self) -> str:
        return _pem(self._load()[1])

    def _load(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The root key and certificate, made on first use (under the directory's lock)."""
        if self._root is not None:
            return self._root
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(self.directory):
            key_path, cert_path = self.directory / KEY_FILE, self.root_path
            if not key_path.exists():
                self._create(key_path, cert_path)
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} is not the built-in CA's key (EC)")
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        self._root = (key, cert)
        return self._root

    def _create(self, key_path: Path, cert_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{self.organization} chargeops CA"),
            ]
        )
        now = clock.now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=ROOT_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(key_path, pem)
        cert_path.write_text(_pem(cert))

    def sign(self, csr_pem: str, charger_id: str, certificate_type: str) -> Issued:
        csr = check_csr(csr_pem, charger_id, self.organization)
        key = csr.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):  # check_csr allows no other
            raise CsrRejected("RSA or EC keys only")
        return self._issue(csr.subject, key, certificate_type)

    def issue_client(self, charger_id: str) -> tuple[Issued, str]:
        """A new key (EC P-256) and a charging station certificate for it, CN = `charger_id`: what a station
        needs for its first connection with security profile 3. Returns the certificate and the key (PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                x509.NameAttribute(NameOID.COMMON_NAME, charger_id),
            ]
        )
        issued = self._issue(subject, key.public_key(), CHARGING_STATION)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return issued, pem.decode()

    def _issue(self, subject: x509.Name, key: PublicKey, certificate_type: str) -> Issued:
        """A leaf for `key`: a TLS client certificate for the station's link to us, or for a V2G certificate
        the TLS server side of ISO 15118 (the station's SECC) as well."""
        ca_key, ca_cert = self._load()
        now = clock.now()
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if certificate_type != CHARGING_STATION:
            usage.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        is_rsa = isinstance(key, rsa.RSAPublicKey)
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, is_rsa, False, not is_rsa, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return Issued(
            serial=format(cert.serial_number, "X"),
            certificate_type=certificate_type,
            subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            chain_pem=_pem(cert),
        )
