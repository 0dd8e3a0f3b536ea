"""Who is really at the other end of a handshake, when a TLS-terminating load balancer stands in front.

Behind a proxy every connection comes from the proxy's address, so a failed-login limit keyed by address
would lock every charger out at once after a few bad passwords. When the peer is one of the operator's
`trusted_proxies` (CIDRs), the client's address is read from `X-Forwarded-For` (RFC 7239 `Forwarded: for=`
too): the rightmost hop that is not itself a trusted proxy, since everything left of it was written by
the client and can be forged. From any other peer the headers are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from chargeops.settings import Network

_FORWARDED_FOR = re.compile(r'for="?\[?([^\]";,]+)', re.IGNORECASE)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.count(":") == 1 and "." in text:  # 1.2.3.4:5678
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: str, proxies: Iterable[Network]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in proxies)


def client_address(peer: str, headers: Iterable[tuple[str, str]], proxies: tuple[Network, ...]) -> str:
    """The address to key limits and logs by: `peer`, or what a trusted proxy says the client was."""
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "x-forwarded-for":
            hops += [h.strip() for h in value.split(",") if h.strip()]
        elif key == "forwarded":
            hops += [m.group(1) for m in _FORWARDED_FOR.finditer(value)]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return peer  # a garbled header from a trusted proxy: keep the proxy's address, never guess
        if not any(ip in net for net in proxies):
            return str(ip)
    return hops[0].strip() if hops and _ip(hops[0]) else peer
