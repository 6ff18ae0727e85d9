"""httpx internals avatarbot relies on (tested with httpx 0.28.1).

- The connection pool of a transport: ``httpx.AsyncHTTPTransport`` builds its httpcore pool
  itself and offers no way to pass httpcore's public ``network_backend`` option, which
  ``CoalescingTransport`` (``bot/providers/_http.py``) needs to send each request in one write.
  The transport keeps that pool in the private ``_pool`` and uses it for every request, so
  ``replace_pool`` swaps it there.
"""

from __future__ import annotations

import httpcore
import httpx

from bot.compat import Fence

TESTED = "0.28.1"
FENCE = Fence("httpx", TESTED, "bot/compat/httpx_compat.py")

FENCE.require_read(httpx.AsyncHTTPTransport.__init__, "_pool")
FENCE.require_read(httpx.AsyncHTTPTransport.handle_async_request, "_pool")


def replace_pool(transport: httpx.AsyncHTTPTransport, pool: httpcore.AsyncConnectionPool) -> None:
    """Make ``transport`` send its requests through ``pool`` (built by the caller)."""
    transport._pool = pool
