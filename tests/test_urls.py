"""The one rule for every URL chargeops hands out or calls (firmware, diagnostics, logs, webhooks): only
globally routable addresses, also when an IPv6 form wraps an IPv4 one (issue 12, SSRF)."""

from __future__ import annotations

import pytest

from chargeops.urls import Destination, destination, url_refusal

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


async def test_webhook_destination_is_pinned_to_the_checked_address() -> None:
    """DNS rebinding: the name is resolved once, checked, and the request goes to that address (Host header
    and TLS server name keep the name); a second lookup that now answers 127.0.0.1 is never made."""
    answers = [["93.184.216.34"], ["127.0.0.1"]]

    async def rebinding(host: str) -> list[str]:
        assert host == "hooks.example.com"
        return answers.pop(0)

    dest = await destination("https://hooks.example.com:8443/in?x=1", False, rebinding)
    assert isinstance(dest, Destination)
    assert dest.url == "https://93.184.216.34:8443/in?x=1"
    assert (dest.host, dest.sni) == ("hooks.example.com:8443", "hooks.example.com")
    assert answers == [["127.0.0.1"]]  # one lookup only

    plain = await destination("http://hooks.example.com/in", False, rebinding)
    assert isinstance(plain, str) and "127.0.0.1" in plain  # the next lookup's private answer is refused


async def test_webhook_destination_refuses_what_does_not_resolve() -> None:
    async def nowhere(host: str) -> list[str]:
        raise OSError("no such host")

    assert await destination("https://hooks.example.com/in", False, nowhere) == (
        "host hooks.example.com does not resolve"
    )
    # a URL for a charger to fetch is not refused for that: the charger resolves it itself
    assert await url_refusal("https://fw.example.invalid/x.bin", allow_private=False) is None
    with_ip = await destination("http://8.8.8.8:8080/in", False, nowhere)
    assert isinstance(with_ip, Destination) and with_ip.url == "http://8.8.8.8:8080/in"
    assert with_ip.host == "8.8.8.8:8080" and with_ip.sni is None
