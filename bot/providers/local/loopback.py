"""Let aioice gather 127.0.0.1 host candidates while a provider that allows loopback lives.

aioice's ``get_host_addresses`` skips 127.0.0.1, so two peers on one machine without another
interface (tests, CI, the browser tests) never connect. The wrapper below adds it back, only while
at least one ``LocalProvider(allow_loopback=True)`` is open; by default nothing changes.
"""

from __future__ import annotations

import threading

import aioice.ice

_lock = threading.Lock()
_users = 0
_original = aioice.ice.get_host_addresses


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _original(use_ipv4, use_ipv6)
    if _users > 0 and use_ipv4 and "127.0.0.1" not in addresses:
        addresses = ["127.0.0.1", *addresses]
    return addresses


def acquire() -> None:
    """Start gathering loopback candidates (counted; pair with ``release``)."""
    global _users
    with _lock:
        _users += 1
        aioice.ice.get_host_addresses = _with_loopback


def release() -> None:
    """Stop gathering loopback candidates once the last user is gone."""
    global _users
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0:
            aioice.ice.get_host_addresses = _original


def enabled() -> bool:
    """Whether loopback candidates are gathered now."""
    return _users > 0
