"""Refuses URLs that point into the operator's own network (SSRF: firmware, diagnostics and log URLs handed
to a charger, webhook URLs we call ourselves), unless the operator allows private addresses explicitly."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp"})
_LOCAL_NAMES = (".localhost", ".local", ".internal", ".localdomain")


def _is_private(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_unspecified
        or ip.is_reserved
        or ip.is_multicast
    )


async def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why `url` may not be handed to a charger, or None if it may."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"not a URL: {url!r}"
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        return f"URL must be {'/'.join(sorted(ALLOWED_SCHEMES))} with a host"
    if allow_private:
        return None
    host = parts.hostname.lower().rstrip(".")
    if host == "localhost" or host.endswith(_LOCAL_NAMES):
        return f"host {host} is local; allow private URLs in the configuration to use it"
    try:
        addrs = [host] if _is_ip(host) else await _resolve(host)
    except OSError:
        return None  # unresolvable here: the charger cannot reach a private address through it either
    private = [a for a in addrs if _is_private(a)]
    if private:
        return f"host {host} is a loopback, link-local or private address ({private[0]})"
    return None


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
