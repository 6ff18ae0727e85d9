"""Behind a reverse proxy: the client's address and scheme, believed only from trusted peers.

A TLS-terminating proxy connects to us over plain HTTP from its own address, and says who the
client was in ``Forwarded`` (RFC 7239) or ``X-Forwarded-For``/``X-Forwarded-Proto``. Anyone can
send those headers, so they are read only when the TCP peer is in ``TRUSTED_PROXIES``, and only
as far as the chain of trusted hops goes: walking the list from the right (the hop nearest to
us), the first address that is not a trusted proxy is the client. Entries left of it were
written by the client itself and are ignored.

The middleware hands the handlers a clone of the request (``Request.clone(remote=, scheme=)``,
aiohttp's public way to do this), so ``request.remote`` (rate limits), ``request.scheme`` and
``request.secure`` (cookies) are the client's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """The IP of a forwarded node (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``"[::1]"``)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _hops(request: web.Request) -> list[tuple[str, str | None]]:
    """``(for, proto)`` of each hop, client side first (``Forwarded`` or X-Forwarded-*)."""
    if "Forwarded" in request.headers:
        return [(str(elem.get("for", "")), elem.get("proto")) for elem in request.forwarded]
    addresses = [
        part.strip() for value in request.headers.getall("X-Forwarded-For", ())
        for part in value.split(",")
    ]
    protos = [
        part.strip().lower() for value in request.headers.getall("X-Forwarded-Proto", ())
        for part in value.split(",")
    ]
    # X-Forwarded-Proto usually has one value, set by the proxy the client reached.
    return [(addr, protos[i] if i < len(protos) else (protos[0] if protos else None))
            for i, addr in enumerate(addresses)]


def resolve(
    peer: str | None, hops: list[tuple[str, str | None]], trusted: Sequence[Network]
) -> tuple[str, str | None] | None:
    """The client's address and scheme, or ``None`` to keep the peer's own.

    Args:
        peer: the TCP peer's address.
        hops: what the forwarding headers say, nearest-to-client first.
        trusted: the networks of the proxies whose headers are believed.
    """
    def is_trusted(addr: Address | None) -> bool:
        return addr is not None and any(addr in net for net in trusted)

    if peer is None or not is_trusted(parse_address(peer)) or not hops:
        return None
    client: tuple[str, str | None] | None = None
    for text, proto in reversed(hops):
        addr = parse_address(text)
        if addr is None:
            break  # "unknown", an obfuscated name or junk: believe nothing beyond it
        client = (str(addr), proto)
        if not is_trusted(addr):
            break
    return client


def forwarded_middleware(trusted: Sequence[Network]) -> Middleware:
    """A middleware that applies trusted forwarding headers (none when ``trusted`` is empty)."""
    networks = tuple(trusted)

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not networks:
            return await handler(request)
        found = resolve(request.remote, _hops(request), networks)
        if found is None:
            return await handler(request)
        remote, proto = found
        changes: dict[str, Any] = {"remote": remote}
        if proto in ("http", "https"):
            changes["scheme"] = proto
        clone = request.clone(**changes)
        try:
            return await handler(clone)
        finally:
            # What handlers note on the request (e.g. extra CSP sources) is read from the
            # original by the response hooks.
            for key, value in clone.items():
                request[key] = value

    return forwarded


__all__ = ["forwarded_middleware", "parse_address", "resolve"]
