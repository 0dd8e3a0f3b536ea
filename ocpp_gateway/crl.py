"""Certificate revocation lists (RFC 5280) for ISO 15118 certificates whose issuer publishes a CRL and no OCSP
responder: a contract certificate chain validated centrally (a certificate with a CRL distribution point and
no OCSP URL) and OCPP 2.1 GetCertificateChainStatus with source CRL.

A CRL is fetched by HTTP GET (http / https URLs only; the SSRF rule of `chargeops.urls`, no redirects), at
most `MAX_CRL_BYTES` and within `pki_timeout`, DER or PEM. It counts only when it is a full CRL (no delta
CRL indicator) of the certificate's issuer: issued under the issuer's name, signed by the issuer's key (so the
issuer's certificate must be known: from the chain, or a root of the contract root store), current
(thisUpdate not ahead, nextUpdate not past). Then the certificate is revoked if its serial number is listed,
else good. A CRL is parsed and checked in a thread (a MiB of CRL takes ~0.1 s) and kept as the set of serial
numbers it lists, cached per (URL, issuer) until its nextUpdate (none: not cached), at most `CACHE_ENTRIES`,
least recently used out; concurrent fetches of one share one request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from chargeops import clock
from chargeops.urls import FetchError, destination, fetch_bounded
from ocpp_gateway.ocsp import CLOCK_SKEW, OcspFailure, Status

MAX_CRL_BYTES = 1024 * 1024
CACHE_ENTRIES = 64


class CrlFailure(OcspFailure):
    """No usable CRL: refused URL, timeout, too large, not a CRL of the issuer, out of date (for the log)."""


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The http(s) URLs of the certificate's CRL distribution points (indirect CRLs, naming another CRL
    issuer, are not used)."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        name.value
        for point in points
        if point.crl_issuer is None
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
        and name.value.lower().startswith(("http://", "https://"))
    ]


@dataclass(frozen=True, slots=True)
class CrlAnswer:
    status: Status  # "good" or "revoked"
    next_update: datetime | None


def check_crl(data: bytes, issuer: x509.Certificate, now: datetime) -> x509.CertificateRevocationList:
    """The CRL in `data` (DER or PEM) if it is a current full CRL signed by `issuer`; else CrlFailure."""
    try:
        crl = (x509.load_pem_x509_crl if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl)(data)
    except ValueError:
        raise CrlFailure("the answer is not a certificate revocation list") from None
    if crl.issuer != issuer.subject:
        name = crl.issuer.rfc4514_string()
        raise CrlFailure(f"the CRL is issued by {name!r}, not by the certificate's issuer")
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        raise CrlFailure("a delta CRL, not a full one")
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise CrlFailure("the CRL is not signed by the certificate's issuer")
    if crl.last_update_utc > now + CLOCK_SKEW:
        raise CrlFailure("the CRL is dated in the future")
    if crl.next_update_utc is not None and crl.next_update_utc < now:
        raise CrlFailure("the CRL is out of date (past its nextUpdate)")
    return crl


CacheKey = tuple[str, bytes]  # URL, the issuer certificate's fingerprint


@dataclass(frozen=True, slots=True)
class Revocations:
    """What a checked CRL says: the serial numbers it lists (a set: looking one up in the CRL object walks
    all its entries) and its nextUpdate."""

    serials: frozenset[int]
    next_update: datetime | None

    @classmethod
    def of(cls, data: bytes, issuer: x509.Certificate, now: datetime) -> Revocations:
        crl = check_crl(data, issuer, now)
        return cls(frozenset(entry.serial_number for entry in crl), crl.next_update_utc)


class CrlClient:
    """One per gateway process (in `pki.Pki`): the CRL cache and its HTTP client, shared by every charger."""

    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        self._timeout = timeout
        self._allow_private = allow_private
        self._cache: OrderedDict[CacheKey, Revocations] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Task[Revocations]] = {}
        self._client: httpx.AsyncClient | None = None
        self.fetches = 0

    async def status(self, serial: int, issuer: x509.Certificate, url: str) -> CrlAnswer:
        """Whether the certificate `issuer` issued with `serial` is on the CRL at `url`; CrlFailure when no
        usable CRL comes within the timeout."""
        crl = await self._crl(url, issuer)
        return CrlAnswer("revoked" if serial in crl.serials else "good", crl.next_update)

    async def _crl(self, url: str, issuer: x509.Certificate) -> Revocations:
        key = (url, issuer.fingerprint(hashes.SHA256()))
        cached = self._cache.get(key)
        if cached is not None and cached.next_update is not None and cached.next_update > clock.now():
            self._cache.move_to_end(key)
            return cached
        self._cache.pop(key, None)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key, url, issuer), name="crl fetch")
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(task)

    def _done(self, key: CacheKey, task: asyncio.Task[Revocations]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody waits for any more is not an error

    async def _fetch(self, key: CacheKey, url: str, issuer: x509.Certificate) -> Revocations:
        try:
            async with asyncio.timeout(self._timeout):
                data = await self._get(url)
        except TimeoutError:
            raise CrlFailure(f"no CRL from {url} within {self._timeout:g} s") from None
        # parsing and checking up to a MiB of CRL takes milliseconds: not on the event loop
        crl = await asyncio.to_thread(Revocations.of, data, issuer, clock.now())
        if crl.next_update is not None:  # RFC 5280 requires one; without it: fetched each time
            self._cache[key] = crl
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return crl

    async def _get(self, url: str) -> bytes:
        if not url.lower().startswith(("http://", "https://")):
            raise CrlFailure(f"CRL URL must be http or https: {url[:80]!r}")
        dest = await destination(url, self._allow_private)
        if isinstance(dest, str):
            raise CrlFailure(f"CRL URL refused: {dest}")
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._timeout)
        extensions = {"sni_hostname": dest.sni} if dest.sni else None
        self.fetches += 1
        headers = {"Host": dest.host}
        request = self._client.build_request("GET", dest.url, headers=headers, extensions=extensions)
        try:
            return await fetch_bounded(self._client, request, url, MAX_CRL_BYTES)
        except FetchError as exc:
            raise CrlFailure(str(exc)) from None

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
