"""Refuses URLs that point into the operator's own network (SSRF: firmware, diagnostics and log URLs handed
to a charger, webhook URLs we call ourselves), unless the operator allows private addresses explicitly."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

ALLOWED_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp"})
_LOCAL_NAMES = (".localhost", ".local", ".internal", ".localdomain")


Resolver = Callable[[str], Awaitable[list[str]]]
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are IPv4


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, Teredo, NAT64), which is where it goes."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): the client is the host behind it
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_private(addr: str) -> bool:
    """Anything but a globally routable unicast address: private, loopback, link-local, shared (carrier-grade
    NAT 100.64.0.0/10, where cloud metadata services live), reserved, documentation, multicast — also when
    wrapped in an IPv6 form that reaches an IPv4 address."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return _is_private(str(inner))
    return not ip.is_global or ip.is_multicast


async def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why `url` may not be handed to a charger, or None if it may."""
    refusal, _ = await _check(url, allow_private)
    return refusal


@dataclass(frozen=True, slots=True)
class Destination:
    """Where to send a request for a checked URL: `url` names the address that was checked, so a name that
    resolves elsewhere by the time we connect (DNS rebinding) is not followed; `host` goes in the Host header
    and is the TLS server name, so virtual hosts and certificates work as for the original URL."""

    url: str
    host: str
    sni: str | None


async def destination(url: str, allow_private: bool, resolve: Resolver | None = None) -> Destination | str:
    """The pinned destination of a URL we call ourselves (webhooks), or why it is refused. Unlike a URL a
    charger fetches, one that does not resolve here is refused: we would have nowhere to connect."""
    refusal, addrs = await _check(url, allow_private, resolve or _resolve)
    if refusal is not None:
        return refusal
    parsed = httpx.URL(url)
    if allow_private or _is_ip(parsed.host):
        return Destination(url, _host_header(parsed), None)
    if not addrs:
        return f"host {parsed.host} does not resolve"
    pinned = parsed.copy_with(host=addrs[0])
    return Destination(str(pinned), _host_header(parsed), parsed.host if parsed.scheme == "https" else None)


def _host_header(url: httpx.URL) -> str:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.host if url.port in (None, default) else f"{url.host}:{url.port}"


async def _check(
    url: str, allow_private: bool, resolve: Resolver | None = None
) -> tuple[str | None, list[str]]:
    """(why refused or None, the addresses the host resolved to: empty if it is an IP or did not resolve)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"not a URL: {url!r}", []
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        return f"URL must be {'/'.join(sorted(ALLOWED_SCHEMES))} with a host", []
    if allow_private:
        return None, []
    host = parts.hostname.lower().rstrip(".")
    if host == "localhost" or host.endswith(_LOCAL_NAMES):
        return f"host {host} is local; allow private URLs in the configuration to use it", []
    try:
        addrs = [host] if _is_ip(host) else await (resolve or _resolve)(host)
    except OSError:
        return None, []  # unresolvable here: the charger cannot reach a private address through it either
    private = [a for a in addrs if _is_private(a)]
    if private:
        why = f"host {host} is not a public address ({private[0]}: private, loopback, link-local or shared)"
        return why, []
    return None, [] if _is_ip(host) else addrs


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), 2.0)
    return [str(info[4][0]) for info in infos]


class FetchError(Exception):
    """An HTTP fetch that did not give a usable body: the reason, for the caller's own error."""


async def fetch_bounded(client: httpx.AsyncClient, request: httpx.Request, url: str, limit: int) -> bytes:
    """The body of a 200 answer to `request`, read as it streams in and refused beyond `limit` bytes (a
    certificate service's answer is small: a large one is a mistake or an attack, never read whole)."""
    try:
        response = await client.send(request, stream=True)
        try:
            if response.status_code != 200:
                raise FetchError(f"{url} answered HTTP {response.status_code}")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise FetchError(f"{url} answered more than {limit} bytes")
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}"[:200]) from None
    return bytes(data)
