"""aioice internals avatarbot relies on (tested with aioice 0.13.0).

aioice gathers host candidates through the module function ``aioice.ice.get_host_addresses``,
which skips 127.0.0.1, so two peers on one machine without another interface (tests, CI, the
browser tests) never connect. ``acquire_loopback`` swaps in a wrapper that adds 127.0.0.1 back
while at least one ``LocalProvider(allow_loopback=True)`` is open; by default nothing changes.
The swap is process-wide (aioice has no per-connection setting).
"""

from __future__ import annotations

import inspect
import threading

import aioice.ice

from bot.compat import Fence

TESTED = "0.13.0"
FENCE = Fence("aioice", TESTED, "bot/compat/aioice_compat.py")

FENCE.require(aioice.ice, "get_host_addresses", callable_=True)
# The wrapper only has an effect if gathering looks the function up in the module at call time.
FENCE.require_read(aioice.ice.Connection.gather_candidates, "get_host_addresses")
if list(inspect.signature(aioice.ice.get_host_addresses).parameters) != ["use_ipv4", "use_ipv6"]:
    raise FENCE.error("aioice.ice.get_host_addresses(use_ipv4, use_ipv6)")

_lock = threading.Lock()
_users = 0
_original = aioice.ice.get_host_addresses


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses: list[str] = _original(use_ipv4, use_ipv6)
    if _users > 0 and use_ipv4 and "127.0.0.1" not in addresses:
        addresses = ["127.0.0.1", *addresses]
    return addresses


def acquire_loopback() -> None:
    """Start gathering loopback candidates (counted; pair with ``release_loopback``)."""
    global _users
    with _lock:
        _users += 1
        aioice.ice.get_host_addresses = _with_loopback


def release_loopback() -> None:
    """Stop gathering loopback candidates once the last user is gone."""
    global _users
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0:
            aioice.ice.get_host_addresses = _original


def loopback_enabled() -> bool:
    """Whether loopback candidates are gathered now."""
    return _users > 0
