"""Jobs a CSMS starts and the charger runs in the background: firmware updates, diagnostics and log
uploads, and the certificates it installs. State lives in a ``JobState`` made on first use.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Coroutine
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_stubs import transfer
from firmware_stubs.charger.base import ChargerBase
from firmware_stubs.charger.components import IDLE_FIRMWARE, IDLE_UPLOAD, CertificateEntry, JobState
from firmware_stubs.model import utc_now


class JobsMixin(ChargerBase):
    """Slow work off the charger loop (HTTP transfers, install steps) and what it reports back."""

    __slots__ = ()

    def _job_state(self) -> JobState:
        if self._jobs is None:
            self._jobs = JobState()
        return self._jobs

    # ------------------------------------------------------------------ certificates
    def install_certificate(self, kind: str, pem: str) -> dict[str, str]:
        """Store a certificate; returns its (synthetic but stable) CertificateHashData."""
        digest = hashlib.sha256(pem.encode()).hexdigest()
        hash_data = {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": digest[:64],
            "issuerKeyHash": hashlib.sha256(digest.encode()).hexdigest()[:64],
            "serialNumber": digest[:16],
        }
        certs = self._job_state().certificates
        certs[:] = [(k, h) for k, h in certs if h != hash_data]
        certs.append((kind, hash_data))
        return hash_data

    def certificates(self, kinds: list[str] | None) -> list[CertificateEntry]:
        """Installed certificates of the given types (all when ``kinds`` is empty)."""
        certs = self._jobs.certificates if self._jobs is not None else []
        return [(k, h) for k, h in certs if not kinds or k in kinds]

    def delete_certificate(self, hash_data: dict[str, Any]) -> bool:
        """Remove the certificate with this hash data's serial number; False if none was installed."""
        jobs = self._jobs
        if jobs is None:
            return False
        certs = jobs.certificates
        keep = [(k, h) for k, h in certs if h.get("serialNumber") != hash_data.get("serialNumber")]
        jobs.certificates = keep
        return len(keep) != len(certs)

    def csr(self) -> str:
        """A real PKCS#10 CSR for SignCertificate, as a station makes one: a new EC P-256 key, CN = the charge
        point id, O = its configured organization (2.x SecurityCtrlr.OrganizationName, 1.6 CpoName), so a
        CSMS that checks CSRs can sign it. The key stays in memory with the job state."""
        key = ec.generate_private_key(ec.SECP256R1())
        org = self.config.get("OrganizationName") or self.config.get("CpoName") or "chargeops"
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, self.id),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            ]
        )
        request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        self._job_state().csr_key = key
        return request.public_bytes(serialization.Encoding.PEM).decode()

    # ------------------------------------------------------------------ background jobs
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Short-lived task for slow I/O (HTTP transfers) so the charger loop keeps answering."""
        tasks = self._job_state().tasks
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def start_firmware_update(
        self, location: str, retrieve_at: dt.datetime | None, request_id: int | None, signed: bool = False
    ) -> None:
        """Download → install → reboot with the new version, reporting each step to the CSMS."""
        self._spawn(self._firmware_job(location, retrieve_at, request_id, signed))

    def _firmware_status(self, status: str, request_id: int | None, signed: bool) -> None:
        self._job_state().firmware = (status, request_id, signed)
        self.dialect.firmware_status(self._whole, status, request_id, signed)

    async def _firmware_job(
        self, location: str, retrieve_at: dt.datetime | None, request_id: int | None, signed: bool
    ) -> None:
        if retrieve_at is not None:
            await asyncio.sleep(max(0.0, (retrieve_at - utc_now()).total_seconds()))
        self._firmware_status("Downloading", request_id, signed)
        try:
            image = await transfer.download(location, self.env.transfer_timeout)
        except Exception as exc:
            self.log.warning("firmware download from %s failed: %r", location, exc)
            self._firmware_status("DownloadFailed", request_id, signed)
            return
        self._firmware_status("Downloaded", request_id, signed)
        await asyncio.sleep(self.env.firmware_step)
        self._firmware_status("Installing", request_id, signed)
        await asyncio.sleep(self.env.firmware_step)
        self.firmware_version = transfer.firmware_version(location, image)
        self._firmware_status("Installed", request_id, signed)
        self.log.info("firmware %s installed, rebooting", self.firmware_version)
        self.request_reboot("FirmwareUpdate", hard=False, stop_reason="Reboot")

    def firmware_state(self) -> tuple[str, int | None, bool]:
        """Last firmware status, for TriggerMessage ('Idle' if no update ran)."""
        return self._jobs.firmware if self._jobs is not None else IDLE_FIRMWARE

    def upload_state(self, kind: str) -> tuple[str, int | None]:
        """Last diagnostics/log upload status, for TriggerMessage ('Idle' if none ran)."""
        jobs = self._jobs
        return jobs.uploads.get(kind, IDLE_UPLOAD) if jobs is not None else IDLE_UPLOAD

    def start_upload(self, kind: str, location: str, request_id: int | None) -> str:
        """Upload a diagnostics/log text file in the background; returns the file name."""
        filename = f"{self.id}-{kind}-{utc_now():%Y%m%dT%H%M%S}.log"
        self._spawn(self._upload_job(kind, location, filename, request_id))
        return filename

    def _upload_status(self, kind: str, status: str, request_id: int | None) -> None:
        self._job_state().uploads[kind] = (status, request_id)
        self.dialect.upload_status(self._whole, kind, status, request_id)

    async def _upload_job(self, kind: str, location: str, filename: str, request_id: int | None) -> None:
        self._upload_status(kind, "Uploading", request_id)
        lines = [f"{kind} for {self.id} ({self.vendor} {self.model} fw {self.firmware_version})"]
        lines += [f"connector {c.index}: {c.status} meter={c.meter_wh:.0f}Wh" for c in self.connectors]
        lines += [f"config {k}={v}" for k, v, _ in self.config.items()]
        lines += [f"received {action}" for action, _ in self.received_calls[-20:]]
        try:
            await transfer.upload(location, filename, "\n".join(lines).encode(), self.env.transfer_timeout)
        except Exception as exc:
            self.log.warning("%s upload to %s failed: %r", kind, location, exc)
            self._upload_status(kind, "UploadFailed", request_id)
            return
        self._upload_status(kind, "Uploaded", request_id)
