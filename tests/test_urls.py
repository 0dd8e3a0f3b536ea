"""The one rule for every URL chargeops hands out or calls (firmware, diagnostics, logs, webhooks): only
globally routable addresses, also when an IPv6 form wraps an IPv4 one (issue 12, SSRF)."""

from __future__ import annotations

import pytest

from chargeops.urls import url_refusal

REFUSED = [
    "http://100.64.0.1/x",  # shared address space (carrier-grade NAT)
    "http://100.100.100.200/latest/meta-data",  # a cloud metadata service lives there
    "http://169.254.169.254/",
    "http://10.0.0.5/fw.bin",
    "http://192.0.2.1/",  # documentation
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo to 192.0.2.45
    "http://[fe80::1]/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://localhost/",
]
ALLOWED = ["https://8.8.8.8/fw.bin", "ftp://[2606:4700::1111]/logs", "http://[2002:808:808::1]/"]


@pytest.mark.parametrize("url", REFUSED)
async def test_non_public_addresses_are_refused(url: str) -> None:
    assert await url_refusal(url, allow_private=False) is not None
    assert await url_refusal(url, allow_private=True) is None  # the operator's explicit way round it


@pytest.mark.parametrize("url", ALLOWED)
async def test_public_addresses_pass(url: str) -> None:
    assert await url_refusal(url, allow_private=False) is None
