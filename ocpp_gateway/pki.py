"""ISO 15118 Plug & Charge behind the central system (OCPP 2.x): contract certificates in Authorize (C07),
certificate status for stations (M06 GetCertificateStatus) and EV contract certificate installation
(M01 / M02 Get15118EVCertificate).

* Authorize with `iso15118CertificateHashData`: every certificate is looked up by OCSP (`ocpp_gateway.ocsp`,
  cached until nextUpdate, bounded by `pki_timeout`). The answer pairs `certificateStatus` and
  `idTokenInfo.status` as C07.FR.13–17 say: the chain good and the eMAID accepted → Accepted / its status;
  the chain good but the eMAID Blocked, Expired, Invalid or Unknown → ContractCancelled / that status; a
  certificate revoked → CertificateRevoked / Invalid; a `certificate` (PEM) past its validity →
  CertificateExpired / Expired; a chain that cannot be verified — the responder does not know a
  certificate, does not answer in time, or answers something that does not hold up — → CertChainError /
  Invalid (fail closed).
* Authorize with a PEM `certificate` (C07.FR.06, central contract validation): with a root store
  (`--contract-roots`, `--contract-roots-ca`) the chain is checked (`ocpp_gateway.contract_chain`: a path to
  a trusted V2G / MO root, signatures, validity, CA constraints, key usage) and each certificate below the
  root looked up by OCSP at the URL it names, its issuer known (so a delegated responder's certificate is
  checked too), or on its CRL (`ocpp_gateway.crl`) when it names a CRL distribution point and no OCSP
  responder; the verdicts pair as above. The contract certificate itself must be of the ISO 15118 key and
  signature profile and certify the eMAID presented (`ocpp_gateway.contract_leaf`; with or without a
  store). Without a store the chain cannot be verified: CertChainError unless expired or refused before.
  Hash data sent beside it is looked up as well; the worse verdict wins. The store is read again when its
  files change (`ReloadingRoots`, every `tls_reload_interval` as the TLS files).
* GetCertificateStatus: Accepted with the responder's answer (base64 DER, whatever the status it reports),
  or Failed when there is none.
* GetCertificateChainStatus (2.1): each certificate asked about by OCSP at the URLs given (in turn, until one
  answers within `pki_timeout`): Good, Revoked or Unknown as the responder says, with its nextUpdate; Failed
  when none answers, with nextUpdate now (ask again). Source CRL: the CRLs at the URLs given, in turn, when
  the certificate's issuer is a contract root (its key checks the CRL): Good or Revoked with the CRL's
  nextUpdate; else Failed.
* Get15118EVCertificate: forwarded to `contract_cert_service_url` (POST, JSON: `chargingStationId` and the
  request's fields as OCPP names them; the service answers `{"status", "exiResponse"}`), or answered from the
  lab test pool (`contract_cert_test_pool`, see `TEST_POOL`), else Failed. No answer in time → Failed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from chargeops import clock
from chargeops.pki.builtin_ca import BuiltinCA
from chargeops.settings import Settings
from chargeops.urls import destination
from ocpp_gateway.contract_chain import PEM_SUFFIXES, ChainProblem, TrustStore, load_roots, ocsp_url
from ocpp_gateway.contract_chain import hash_data as hash_of
from ocpp_gateway.contract_leaf import check_leaf
from ocpp_gateway.crl import CrlAnswer, CrlClient, CrlFailure, crl_urls
from ocpp_gateway.ocsp import OcspAnswer, OcspClient, OcspFailure
from ocpp_gateway.reloading import ReloadingFiles
from ocpp_gateway.times import ocpp_time
from ocpp_gateway.versions import OcppVersion

log = logging.getLogger("chargeops.gateway.pki")

Payload = dict[str, Any]
REFUSED_TOKEN = frozenset({"Blocked", "Expired", "Invalid", "Unknown"})
MAX_SERVICE_BYTES = 64 * 1024
# The lab test pool: what Get15118EVCertificate is answered with when `contract_cert_test_pool` is on and no
# service is configured. Marked test data, not a CertificateInstallationRes an EV can install: it lets a lab
# run a station's OCPP side of certificate installation (Accepted, an exiResponse) without a contract
# certificate pool. The entry is chosen by the request, so a retried request gets the same answer.
TEST_POOL = tuple(
    base64.b64encode(f"chargeops-test-pool:{n}:not-a-CertificateInstallationRes".encode()).decode()
    for n in range(4)
)


def _failed(reason: str, info: str) -> Payload:
    return {"status": "Failed", "statusInfo": {"reasonCode": reason, "additionalInfo": info[:500]}}


class Pki:
    """One per gateway process (in `GatewayContext`): the OCSP client with its cache, and the contract
    certificate service's HTTP client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.ocsp = OcspClient(
            responder_url=settings.ocsp_responder_url,
            timeout=settings.pki_timeout,
            allow_private=settings.allow_private_urls,
        )
        self._client: httpx.AsyncClient | None = None
        self.crl = CrlClient(timeout=settings.pki_timeout, allow_private=settings.allow_private_urls)
        self.root_files = ReloadingRoots(settings)

    @property
    def roots(self) -> TrustStore:
        """The contract root store in use (the newest that loaded)."""
        return self.root_files.current

    # -- C07: Authorize with a contract certificate --------------------------------------------------------

    async def contract_verdict(
        self, hash_data: list[Payload], certificate: str | None, emaid: str | None = None
    ) -> str:
        """The contract certificate chain's AuthorizeCertificateStatus (Accepted, CertificateRevoked,
        CertificateExpired, SignatureError or CertChainError); `emaid`: the idToken presented, which a PEM
        contract certificate must certify (`contract_leaf`)."""
        path: list[x509.Certificate] = []
        if certificate is not None:
            try:
                path = self._chain(certificate)
                check_leaf(path[0], emaid)
            except ChainProblem as problem:
                log.warning("contract certificate refused (%s): %s", problem.verdict, problem)
                return problem.verdict
        lookups: list[Awaitable[OcspAnswer | CrlAnswer]] = [
            self.ocsp.status(d, issuer=self._known_issuer(d)) for d in hash_data
        ]
        lookups += [self._revocation(cert, issuer) for cert, issuer in pairwise(path)]
        if not lookups:
            return "CertChainError"
        answers = await asyncio.gather(*lookups, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, OcspFailure):
                log.warning("contract certificate not verified: %s", answer)
            elif isinstance(answer, BaseException):
                raise answer
        statuses = [a.status for a in answers if not isinstance(a, BaseException)]
        if "revoked" in statuses:
            return "CertificateRevoked"
        if len(statuses) < len(answers) or "unknown" in statuses:
            return "CertChainError"
        return "Accepted"

    def _chain(self, certificate: str) -> list[x509.Certificate]:
        """The checked path to a trusted root, or without a root store the chain as sent (leaf first) once
        each is inside its validity: it cannot be verified, only refused (hash data sent beside decide)."""
        if self.roots:
            return self.roots.path(certificate, clock.now())
        try:
            chain = x509.load_pem_x509_certificates(certificate.encode())
        except ValueError:
            raise ChainProblem("CertChainError", "the certificate is not a PEM certificate chain") from None
        now = clock.now()
        for cert in chain:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                why = f"{cert.subject.rfc4514_string()!r} is outside its validity"
                raise ChainProblem("CertificateExpired", why)
        return chain[:1]  # no issuer known: only the leaf is checked, its status not looked up

    async def _revocation(self, cert: x509.Certificate, issuer: x509.Certificate) -> OcspAnswer | CrlAnswer:
        """`cert`'s status by OCSP, or by its CRLs (in turn) when it names no OCSP responder and no operator
        responder is configured; OcspFailure / CrlFailure when there is none."""
        urls = crl_urls(cert)
        if ocsp_url(cert) is not None or self._settings.ocsp_responder_url or not urls:
            return await self.ocsp.status(hash_of(cert, issuer), issuer=issuer)
        failures = []
        try:
            async with asyncio.timeout(self._settings.pki_timeout):  # all of its CRLs, not each
                for url in urls:
                    try:
                        return await self.crl.status(cert.serial_number, issuer, url)
                    except CrlFailure as exc:
                        failures.append(str(exc))
        except TimeoutError:
            failures.append(f"no CRL within {self._settings.pki_timeout:g} s")
        raise CrlFailure("; ".join(failures))

    def _known_issuer(self, data: Payload) -> x509.Certificate | None:
        """The root of the store that issued the certificate `data` is about, if any."""
        try:
            return self.roots.issuer_for(str(data.get("hashAlgorithm")), bytes.fromhex(data["issuerKeyHash"]))
        except (KeyError, TypeError, ValueError):
            return None

    # -- M06: GetCertificateStatus -------------------------------------------------------------------------

    async def certificate_status(self, request_data: Payload) -> Payload:
        try:
            answer = await self.ocsp.status(request_data)
        except OcspFailure as exc:
            log.warning("GetCertificateStatus failed: %s", exc)
            return _failed("OcspUnavailable", str(exc))
        result = answer.base64
        if len(result) > 5500:  # ocspResult's limit in 2.0.1 and 2.1
            return _failed("OcspTooLarge", f"the responder's answer is {len(result)} characters in base64")
        return {"status": "Accepted", "ocspResult": result}

    # -- 2.1 GetCertificateChainStatus ---------------------------------------------------------------------

    async def chain_status(self, requests: list[Payload]) -> Payload:
        """The GetCertificateChainStatus answer: one CertificateStatusType per request, in order."""
        return {"certificateStatus": list(await asyncio.gather(*(self._one_status(r) for r in requests)))}

    async def _one_status(self, request: Payload) -> Payload:
        hash_data = request["certificateHashData"]
        answer: Payload = {"certificateHashData": hash_data, "source": request["source"]}
        first = self._first_answer if request["source"] == "OCSP" else self._first_crl
        found: OcspAnswer | CrlAnswer | None
        try:
            async with asyncio.timeout(self._settings.pki_timeout):
                found = await first(hash_data, request["urls"])
        except TimeoutError:
            found = None
        if found is None:
            return {**answer, "status": "Failed", "nextUpdate": ocpp_time(clock.now())}
        status = {"good": "Good", "revoked": "Revoked"}.get(found.status, "Unknown")
        return {**answer, "status": status, "nextUpdate": ocpp_time(found.next_update or clock.now())}

    async def _first_answer(self, hash_data: Payload, urls: list[str]) -> OcspAnswer | None:
        """The first responder of `urls` that answers (the operator's instead, when configured)."""
        issuer = self._known_issuer(hash_data)
        if self._settings.ocsp_responder_url:
            urls = urls[:1]  # the operator's responder is asked instead of each of them: once
        for url in urls:
            try:
                return await self.ocsp.status({**hash_data, "responderURL": url}, issuer=issuer)
            except OcspFailure as exc:
                log.warning("GetCertificateChainStatus: %s", exc)
        return None

    async def _first_crl(self, hash_data: Payload, urls: list[str]) -> CrlAnswer | None:
        """The certificate's status on the first CRL of `urls` that holds up; its issuer must be a root of the
        contract root store (a CRL's signature is checked with the issuer's key, which hashes alone lack)."""
        issuer = self._known_issuer(hash_data)
        if issuer is None:
            log.warning("GetCertificateChainStatus: CRL not checkable, the issuer is not a contract root")
            return None
        try:
            serial = int(hash_data["serialNumber"], 16)
        except (KeyError, TypeError, ValueError):
            return None
        for url in urls:
            try:
                return await self.crl.status(serial, issuer, url)
            except CrlFailure as exc:
                log.warning("GetCertificateChainStatus: %s", exc)
        return None

    # -- M01 / M02: Get15118EVCertificate ------------------------------------------------------------------

    async def ev_certificate(self, charger_id: str, request: Payload, version: OcppVersion) -> Payload:
        """The Get15118EVCertificate answer: the service's, the test pool's, or Failed. An exiResponse
        longer than the version's schema allows is Failed."""
        max_exi = version.max_length("Get15118EVCertificate", "exiResponse", response=True)
        url = self._settings.contract_cert_service_url
        if url is None:
            if not self._settings.contract_cert_test_pool:
                return {
                    "exiResponse": "",
                    **_failed("NoService", "no contract certificate service configured"),
                }
            digest = hashlib.sha256(str(request.get("exiRequest", "")).encode()).digest()
            return {"status": "Accepted", "exiResponse": TEST_POOL[digest[0] % len(TEST_POOL)]}
        try:
            async with asyncio.timeout(self._settings.pki_timeout):
                answer = await self._post_json(url, {"chargingStationId": charger_id, **request})
        except TimeoutError:
            why = f"no answer within {self._settings.pki_timeout:g} s"
            log.warning("contract certificate service: %s", why)
            return {"exiResponse": "", **_failed("Timeout", why)}
        except OcspFailure as exc:
            log.warning("contract certificate service: %s", exc)
            return {"exiResponse": "", **_failed("ServiceFailed", str(exc))}
        exi = answer.get("exiResponse")
        status = answer.get("status", "Accepted")
        if not isinstance(exi, str) or not exi or len(exi) > max_exi or status != "Accepted":
            why = f"the service answered status {str(status)[:40]!r} with no usable exiResponse"
            return {"exiResponse": "", **_failed("ServiceFailed", why)}
        return {"status": "Accepted", "exiResponse": exi}

    async def _post_json(self, url: str, body: Payload) -> Payload:
        """POST `body` to a checked URL (SSRF rule, pinned address, no redirects); the JSON object answered.
        Failures are OcspFailure (one error type for the PKI's outside services)."""
        if not url.lower().startswith(("http://", "https://")):
            raise OcspFailure("the service URL must be http or https")
        dest = await destination(url, self._settings.allow_private_urls)
        if isinstance(dest, str):
            raise OcspFailure(f"service URL refused: {dest}")
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._settings.pki_timeout)
        extensions = {"sni_hostname": dest.sni} if dest.sni else None
        try:
            response = await self._client.post(
                dest.url, json=body, headers={"Host": dest.host}, extensions=extensions
            )
        except httpx.HTTPError as exc:
            raise OcspFailure(f"{type(exc).__name__}: {exc}"[:200]) from None
        if response.status_code != 200 or len(response.content) > MAX_SERVICE_BYTES:
            raise OcspFailure(f"the service answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise OcspFailure("the service's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise OcspFailure("the service's answer is not a JSON object")
        return answer

    async def close(self) -> None:
        await self.root_files.stop()
        await self.ocsp.close()
        await self.crl.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def combine(token_info: Payload, verdict: str) -> tuple[Payload, str]:
    """C07.FR.13–17: the idTokenInfo and certificateStatus of an Authorize whose token was looked up as
    `token_info` and whose contract certificate chain got `verdict`."""
    status = token_info["status"]
    if verdict == "Accepted":
        return token_info, "ContractCancelled" if status in REFUSED_TOKEN else "Accepted"
    status = "Expired" if verdict == "CertificateExpired" else "Invalid"
    return {"status": status}, verdict


class ReloadingRoots(ReloadingFiles[TrustStore]):
    """The contract root store, read again when its files change (every `tls_reload_interval`, as the TLS
    files are): a file or directory that no longer loads logs once and the last good store stays."""

    what = "contract roots"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def paths(self) -> Iterator[Path]:
        path = self.settings.contract_roots
        if path is None:
            return
        yield path
        if path.is_dir():  # the directory itself (files come and go) and each root file in it
            try:
                yield from sorted(p for p in path.iterdir() if p.suffix.lower() in PEM_SUFFIXES)
            except OSError:
                return

    def load(self) -> TrustStore:
        return trust_store(self.settings)

    def loaded(self, value: TrustStore) -> None:
        log.info("contract roots reloaded: %d root certificates", len(value.roots))


def trust_store(settings: Settings) -> TrustStore:
    """The contract root store the settings name (ContractRootsError when a file does not load)."""
    roots = load_roots([settings.contract_roots] if settings.contract_roots is not None else [])
    if settings.contract_roots_ca:  # the built-in CA signs V2G certificates from its one root
        roots += (x509.load_pem_x509_certificate(BuiltinCA.of(settings).root_pem().encode()),)
    return TrustStore(roots)
