"""The gateway's TLS as OCPP 2.0.1 security profiles 2 and 3 require it of a CSMS, and its certificates
reloaded without a restart.

- TLS 1.2 or newer (A00.FR.313), no TLS compression (A00.FR.321).
- TLS 1.2 suites: the four of A00.FR.318 (TLS_ECDHE_ECDSA_WITH_AES_128/256_GCM and the static
  TLS_RSA_WITH_AES_128/256_GCM, which Python's default cipher string leaves out) and ECDHE-RSA with AES-GCM,
  so a client of an RSA certificate still gets forward secrecy. The server's order decides: ECDHE first,
  static RSA only for a client that offers nothing else. TLS 1.3 keeps OpenSSL's suites (all AEAD).
- An RSA and an ECDSA certificate at once (A00.FR.318's note: two certificates for the four suites): OpenSSL
  keeps one per key type and presents the one the client's offer can use.
- Reload (`ocpp_gateway.reloading`): the certificate, key and client CA files are looked at every
  `tls_reload_interval` seconds; when one changed, a new context is built and every handshake from then on
  gets it (the listening context's SNI callback, called for each ClientHello, hands it over), while open
  connections keep theirs. A file that does not load logs one error and the certificates in use stay.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from chargeops.settings import Settings
from ocpp_gateway.reloading import ReloadingFiles

log = logging.getLogger("chargeops.gateway")

# TLS 1.2 suites in the server's order of preference: OpenSSL names (IANA names in the comments).
TLS12_SUITES = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (A00.FR.318)
    "ECDHE-ECDSA-AES256-GCM-SHA384",  # TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 (A00.FR.318)
    "ECDHE-RSA-AES128-GCM-SHA256",  # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    "ECDHE-RSA-AES256-GCM-SHA384",  # TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    "AES128-GCM-SHA256",  # TLS_RSA_WITH_AES_128_GCM_SHA256 (A00.FR.318)
    "AES256-GCM-SHA384",  # TLS_RSA_WITH_AES_256_GCM_SHA384 (A00.FR.318)
)

# The subject public key's algorithm in a certificate's DER: rsaEncryption, id-ecPublicKey.
_KEY_OIDS = {"RSA": bytes.fromhex("06092a864886f70d010101"), "ECDSA": bytes.fromhex("06072a8648ce3d0201")}
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TlsFilesError(ValueError):
    """A certificate, key or CA file that cannot serve; the message names the file and the setting."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """What the gateway serves TLS with: one or two certificate/key pairs, and the client CA."""

    pairs: tuple[tuple[Path, Path | None], ...]
    client_ca: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        return tuple(p for pair in self.pairs for p in pair if p is not None) + (
            (self.client_ca,) if self.client_ca else ()
        )


def files_from(settings: Settings) -> TlsFiles | None:
    """The TLS files the settings name (None: plain ws://); TlsFilesError for settings that cannot work."""
    s = settings
    if s.tls_cert is None:
        stray = [
            n for n in ("tls_key", "tls_second_cert", "tls_second_key", "tls_client_ca") if getattr(s, n)
        ]
        if stray:
            raise TlsFilesError(f"CHARGEOPS_{stray[0].upper()} is set but CHARGEOPS_TLS_CERT is not")
        return None
    if s.tls_second_key is not None and s.tls_second_cert is None:
        raise TlsFilesError("CHARGEOPS_TLS_SECOND_KEY is set but CHARGEOPS_TLS_SECOND_CERT is not")
    pairs = [(s.tls_cert, s.tls_key)]
    if s.tls_second_cert is not None:
        pairs.append((s.tls_second_cert, s.tls_second_key))
    return TlsFiles(tuple(pairs), s.tls_client_ca)


def key_type(cert_file: Path) -> str:
    """`RSA` or `ECDSA`: the key of the first certificate in a PEM file (the leaf of a chain)."""
    match = _PEM_CERT.search(cert_file.read_text(encoding="ascii", errors="replace"))
    if match is None:
        raise TlsFilesError(f"{cert_file}: no PEM certificate in it")
    der = ssl.PEM_cert_to_DER_cert(match.group(0))
    found = {name: der.find(oid) for name, oid in _KEY_OIDS.items() if oid in der}
    if not found:
        raise TlsFilesError(f"{cert_file}: neither an RSA nor an ECDSA key (the suites need one of them)")
    return min(found, key=lambda name: found[name])


def build_context(files: TlsFiles) -> tuple[ssl.SSLContext, tuple[str, ...]]:
    """A server context with OCPP's versions and suites and every certificate of `files`, and the key types
    it serves; TlsFilesError says which file does not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(":".join(TLS12_SUITES))
    kinds: dict[str, Path] = {}
    for cert, key in files.pairs:
        try:
            kind = key_type(cert)
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsFilesError(f"{cert}{f' / {key}' if key else ''}: {_reason(exc)}") from None
        if kind in kinds:
            raise TlsFilesError(
                f"{kinds[kind]} and {cert} both hold {kind} keys: give one RSA and one ECDSA certificate"
            )
        kinds[kind] = cert
    if files.client_ca:
        try:
            ctx.load_verify_locations(files.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsFilesError(f"{files.client_ca}: {_reason(exc)}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL  # profile 2 chargers send none; profile 3 must
    return ctx, tuple(kinds)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc)


class ReloadingTls(ReloadingFiles[tuple[ssl.SSLContext, tuple[str, ...]]]):
    """The listening SSL context, whose handshakes are handed the newest context that loaded."""

    what = "TLS certificates"

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        super().__init__()
        self.listening, self.kinds = self.current
        self.listening.sni_callback = self._hand_over

    def paths(self) -> tuple[Path, ...]:
        return self.files.paths()

    def load(self) -> tuple[ssl.SSLContext, tuple[str, ...]]:
        return build_context(self.files)

    def loaded(self, value: tuple[ssl.SSLContext, tuple[str, ...]]) -> None:
        self.kinds = value[1]
        log.info("TLS certificates reloaded (%s): new handshakes use them", " and ".join(self.kinds))

    def _hand_over(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object) -> None:
        context = self.current[0]
        if context is not self.listening:
            conn.context = context  # certificates and CA; open connections keep the context they have
