"""Who is really at the other end of a handshake, when a TLS-terminating load balancer stands in front.

Behind a proxy every connection comes from the proxy's address, so a failed-login limit keyed by address
would lock every charger out at once after a few bad passwords. When the peer is one of the operator's
`trusted_proxies` (CIDRs), the client's address is read from `X-Forwarded-For` (RFC 7239 `Forwarded: for=`
too): the rightmost hop that is not itself a trusted proxy, since everything left of it was written by
the client and can be forged. From any other peer the headers are ignored.

Whether the charger reached the balancer over TLS (security profile 2 behind a TLS-terminating balancer) is
read the same way: `X-Forwarded-Proto` (its rightmost value, the nearest proxy's) and RFC 7239
`Forwarded: proto=` (the element of the rightmost hop that is not a trusted proxy), only from a trusted peer,
and only when every such header present says the same. The balancer must set these headers, not pass on
what the client sent (docker/haproxy/haproxy.cfg does).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from chargeops.settings import Network

_FORWARDED_FOR = re.compile(r'for="?\[?([^\]";,]+)', re.IGNORECASE)
_PAIR = re.compile(r'([A-Za-z]+)\s*=\s*("[^"]*"|[^;,]*)')


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


def _hop(text: str) -> str:
    """`"[2001:db8::1]:4711"` → `2001:db8::1`; `1.2.3.4:5` stays for `_ip`."""
    text = text.strip().strip('"')
    return text[1:].split("]", 1)[0] if text.startswith("[") else text


def forwarded_proto(
    peer: str, headers: Iterable[tuple[str, str]], proxies: tuple[Network, ...]
) -> str | None:
    """The scheme the client used to reach our first trusted proxy (`https`: the balancer terminated TLS),
    or None: an untrusted peer, no such header, or headers that disagree."""
    if not proxies or not _trusted(peer, proxies):
        return None
    elements: list[dict[str, str]] = []
    xfp: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "forwarded":
            for element in value.split(","):
                elements.append({k.lower(): v.strip().strip('"') for k, v in _PAIR.findall(element)})
        elif key == "x-forwarded-proto":
            xfp += [v.strip() for v in value.split(",") if v.strip()]
    said: set[str] = set()
    if elements:
        client_hop = next(
            (e for e in reversed(elements) if not _trusted(_hop(e.get("for", "")), proxies)), elements[0]
        )
        said.add(client_hop.get("proto", "").lower())
    if xfp:
        said.add(xfp[-1].lower())
    return said.pop() if len(said) == 1 and "" not in said else None
