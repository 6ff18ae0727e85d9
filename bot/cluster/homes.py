"""Session homes across workers (``SessionHomes`` of ``bot/core/homes.py``) over Redis and HTTP.

- Each worker advertises how the others reach it (``WORKER_URL``, else ``http://HOST:PORT``) in
  ``<prefix>worker:<worker id>``, refreshed every third of ``LEASE_TTL_S`` and expiring after
  three TTLs, deleted when it leaves.
- A session's home is the worker whose id its lease ``<prefix>lease:session:<id>`` holds.
- A call is ``POST <home>/internal/home`` with a JSON body ``{"op", "session_id", ...}`` and the
  header ``X-Avatarbot-Worker: <unix time>.<HMAC-SHA256>`` over the time and the body, keyed by a
  key derived from the link secret (``SECRET_KEY``, the same on every worker). The receiving
  worker refuses bodies signed more than ``MAX_SKEW_S`` away from its clock, and never forwards
  again (no loops). See docs/scale-out.md, "Sessions with a home".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from types import TracebackType
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.compat.cancel import cancel_and_wait
from bot.core.errors import Forwarded, WorkerUnreachable
from bot.core.leases import LeaseManager, session_lease

log = logging.getLogger(__name__)

HEADER = "X-Avatarbot-Worker"
PATH = "/internal/home"
MAX_SKEW_S = 30.0
CALL_TIMEOUT_S = 10.0  # an offer renders nothing: the home answers within a fraction of this
GONE = ("The server running this session cannot be reached right now; try again in a moment.")


def forward_key(link_secret: bytes) -> bytes:
    """The key worker-to-worker calls are signed with: derived, so a link's key never signs them."""
    return hmac.new(link_secret, b"avatarbot worker-to-worker calls v1", hashlib.sha256).digest()


def sign(key: bytes, body: bytes, now: float | None = None) -> str:
    """The ``X-Avatarbot-Worker`` header value for ``body``."""
    stamp = str(int(now if now is not None else time.time()))
    return f"{stamp}.{_mac(key, stamp, body)}"


def _mac(key: bytes, stamp: str, body: bytes) -> str:
    return hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(key: bytes, header: str | None, body: bytes, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``key`` within ``MAX_SKEW_S`` of now."""
    if not header or "." not in header:
        return False
    stamp, _, mac = header.partition(".")
    if not stamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(stamp)) > MAX_SKEW_S:
        return False
    return hmac.compare_digest(_mac(key, stamp, body), mac)


class RedisHomes:
    """Where each session's home is, and calls to it; an async context manager (advertising).

    Args:
        client: the Redis client.
        prefix: the deployment's key prefix.
        worker_id: this worker's id (the value of the leases it holds).
        url: how the other workers reach this one.
        key: the signing key (``forward_key``).
        ttl_s: the lease TTL; the address is refreshed every third of it.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str, worker_id: str, url: str,
                 key: bytes, ttl_s: float = 10.0, leases: LeaseManager | None = None) -> None:
        self.client = client
        # This worker's leases: a session whose lease it holds is at home here, asked of
        # nobody (each message of a homed session asks; usually the answer is "here").
        self.leases = leases
        self.prefix = prefix
        self.worker_id = worker_id
        self.url = url.rstrip("/")
        self.key = key
        self.ttl_s = ttl_s
        self._http: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None

    def _worker_key(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    async def __aenter__(self) -> RedisHomes:
        await self._advertise()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S))
        self._refresher = asyncio.create_task(self._refresh(), name="worker-address")
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._refresher is not None:
            await cancel_and_wait(self._refresher)  # it writes to Redis: see bot/compat/cancel.py
        if self._http is not None:
            await self._http.close()
        with contextlib.suppress(RedisError, OSError):
            await self.client.delete(self._worker_key(self.worker_id))

    async def _advertise(self) -> None:
        await self.client.set(self._worker_key(self.worker_id), self.url,
                              px=int(self.ttl_s * 3000))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self._advertise()
            except (RedisError, OSError) as exc:
                log.warning("could not refresh this worker's address: %r", exc)

    async def home_of(self, session_id: str) -> str | None:
        """The home's address when another worker holds the session's lease, else ``None``."""
        if self.leases is not None and self.leases.holds(session_lease(session_id)):
            return None  # held here, surely: ``holds`` ends before the lease's Redis key does
        lease = f"{self.prefix}lease:{session_lease(session_id)}"
        try:
            holder = await self.client.get(lease)
            if holder is None:
                return None  # nobody tends it right now: this worker does what it can
            holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
            if holder_id == self.worker_id:
                return None
            url = await self.client.get(self._worker_key(holder_id))
        except (RedisError, OSError) as exc:
            log.warning("could not look up a session's worker: %r", exc)
            raise WorkerUnreachable(GONE) from None
        if url is None:
            log.warning("session %s is held by worker %s, which advertises no address",
                        session_id, holder_id)
            raise WorkerUnreachable(GONE)
        found = url.decode() if isinstance(url, bytes) else str(url)
        return None if found == self.url else found

    async def call(self, home: str, op: str, session_id: str, **fields: Any) -> dict[str, Any]:
        """Run ``op`` on the worker at ``home``; its errors come back as ``Forwarded``."""
        if self._http is None:
            raise RuntimeError("RedisHomes is not entered")
        body = json.dumps({"op": op, "session_id": session_id, **fields},
                          separators=(",", ":")).encode()
        headers = {HEADER: sign(self.key, body), "Content-Type": "application/json"}
        try:
            async with self._http.post(home + PATH, data=body, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # The address and the op only: never the body (SDP, the viewer's text).
            log.warning("worker at %s did not answer %s for session %s: %s", home, op,
                        session_id, type(exc).__name__)
            raise WorkerUnreachable(GONE) from None
        if not isinstance(answer, dict):
            raise WorkerUnreachable(GONE)
        if status >= 400:
            raise Forwarded(str(answer.get("error") or "The request failed."), status)
        return answer
