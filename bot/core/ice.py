"""ICE servers a browser may see, and TURN credentials minted per viewer.

Static TURN credentials (``LOCAL_ICE_SERVERS`` entries with ``username``/``credential``) are the
server's own: a browser that got them could relay anything through the TURN server for as long
as they stay valid. Viewers get instead credentials of the TURN REST scheme that coturn checks
with ``use-auth-secret`` (docs/browser.md): username ``<expiry unix time>:<viewer id>``,
credential ``base64(HMAC-SHA1(shared secret, username))``, so each one expires by itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def turn_rest_credentials(secret: bytes, viewer_id: str, expires_at: int) -> tuple[str, str]:
    """``(username, credential)`` for ``viewer_id``, valid until ``expires_at`` (epoch s)."""
    if ":" in viewer_id:
        raise ValueError("a viewer id must not hold ':' (coturn's separator)")
    username = f"{int(expires_at)}:{viewer_id}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def minted_turn_server(
    urls: list[str], secret: bytes, viewer_id: str, ttl_s: int, now: float | None = None
) -> dict[str, Any]:
    """One ``RTCIceServer`` dict with fresh credentials for ``viewer_id``."""
    expires = int((time.time() if now is None else now) + ttl_s)
    username, credential = turn_rest_credentials(secret, viewer_id, expires)
    return {"urls": list(urls), "username": username, "credential": credential}


def _urls(server: dict[str, Any]) -> list[str]:
    urls = server.get("urls")
    if isinstance(urls, str):
        return [urls]
    return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []


def public_ice_servers(servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries a browser may have: no credentials, no user info in a URL, only ``urls``."""
    out = []
    for server in servers:
        if not isinstance(server, dict) or server.get("username") or server.get("credential"):
            continue
        urls = [u for u in _urls(server) if "@" not in u]
        if urls:
            out.append({"urls": urls})
    return out


# An mDNS name as browsers make them to hide local addresses: a UUID and ".local".
_MDNS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.local", re.I)


def candidate_address_problem(host: str, port: int, *, allow_loopback: bool = False) -> str | None:
    """Why a remote ICE candidate's address is not one to send STUN checks to, or ``None``.

    Browsers name their own addresses (host, server-reflexive, relay) or an mDNS ``.local``
    name. Anything else (a DNS name the server would look up, unspecified, multicast,
    broadcast or reserved addresses, port 0) is junk or an attempt to aim our checks.
    """
    if not 1 <= port <= 65535:
        return "its port is not 1-65535"
    if _MDNS.fullmatch(host):
        return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return "its address is neither an IP address nor a browser's .local name"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified or addr.is_multicast or addr.is_reserved:
        return "its address cannot be a peer's"
    if isinstance(addr, ipaddress.IPv4Address) and (
        addr == ipaddress.IPv4Address("255.255.255.255") or addr in _THIS_NETWORK
    ):
        return "its address cannot be a peer's"
    if addr.is_loopback and not allow_loopback:
        return "it names this machine"
    return None


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def display_url(url: str) -> str:
    """``url`` as it may be shown: without user name, password, query or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


__all__ = [
    "candidate_address_problem", "display_url", "minted_turn_server", "public_ice_servers",
    "turn_rest_credentials",
]
