"""HTTP transfers for firmware downloads and diagnostics/log uploads (httpx, one short-lived client each)."""

from __future__ import annotations

import hashlib
import posixpath
import urllib.parse

import httpx


def _check_scheme(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"unsupported transfer scheme in {url!r} (only http/https)")


async def download(url: str, timeout: float) -> bytes:
    """GET the firmware image; any network or HTTP error propagates as an exception."""
    _check_scheme(url)
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


async def upload(url: str, filename: str, content: bytes, timeout: float) -> None:
    """POST the file as multipart/form-data field ``file`` (what most CSMS upload endpoints accept)."""
    _check_scheme(url)
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.post(url, files={"file": (filename, content, "text/plain")})
        response.raise_for_status()


def firmware_version(url: str, image: bytes) -> str:
    """Version string of a downloaded image: the file name without extension, else a content hash."""
    name = posixpath.basename(urllib.parse.urlsplit(url).path)
    stem = name.split(".bin")[0].split(".img")[0].split(".tar")[0] if name else ""
    return (stem or hashlib.sha256(image).hexdigest()[:12])[:50]
