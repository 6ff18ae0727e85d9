"""The event hub across processes, over Redis pub/sub.

Every worker publishes its events on one channel (``<prefix>events``) and feeds the other
workers' events into its own hub. One channel rather than one per session: each worker has
subscribers to every session (the reaper, the chat relays), so each would subscribe to every
session's channel anyway. Each message names the worker that sent it; a worker drops its own.

Wire format (JSON): ``{"w": worker id, "type": event kind, "event": the event's JSON}``.

``Relay`` wake-ups are mirrored too: a relay page connected to another worker than the session's
home pulls its messages from the home when woken (docs/scale-out.md, "Sessions with a home").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from bot.compat.cancel import cancel_and_wait
from bot.core.events import EVENT_TYPES, AnyEvent, EventHub

log = logging.getLogger(__name__)


class RedisEventBus:
    """Mirrors ``hub``'s events to the other workers and delivers theirs into ``hub``.

    Use as an async context manager: on entry it subscribes (so nothing published after entry
    is missed) and sets itself as ``hub.bus``; on exit it unhooks and stops.
    """

    def __init__(
        self, client: aioredis.Redis, hub: EventHub, *, prefix: str,
        worker_id: str | None = None, queue_size: int = 10_000,
    ) -> None:
        self.client = client
        self.hub = hub
        self.channel = f"{prefix}events"
        self.worker_id = worker_id or uuid.uuid4().hex
        self._worker_json = json.dumps(self.worker_id)
        self._outbox: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self.sent = 0
        self.received = 0

    def send(self, event: AnyEvent) -> None:
        """Queue ``event`` for the other workers; never blocks (a full queue drops the oldest)."""
        message = (
            f'{{"w":{self._worker_json},"type":"{event.kind}","event":{event.model_dump_json()}}}'
        )
        if self._outbox.full():
            self._outbox.get_nowait()
            log.warning("event bus backlog full; dropped the oldest event")
        self._outbox.put_nowait(message)

    async def __aenter__(self) -> RedisEventBus:
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=False)
        await self._pubsub.subscribe(self.channel)
        # Wait for the server's confirmation: from then on, every publish reaches us.
        deadline = asyncio.get_running_loop().time() + 10.0
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise RedisError("no subscription confirmation from Redis")
            message = await self._pubsub.get_message(timeout=min(left, 1.0))
            if message is not None and message["type"] == "subscribe":
                break
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="bus-publish"),
            asyncio.create_task(self._listen_loop(), name="bus-listen"),
        ]
        self.hub.bus = self
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.hub.bus is self:
            self.hub.bus = None
        await self.flush()
        for task in self._tasks:
            await cancel_and_wait(task)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()

    async def flush(self, wait_s: float = 2.0) -> None:
        """Wait (up to ``wait_s``) until every queued event has been published."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), wait_s)

    async def _publish_loop(self) -> None:
        while True:
            # What queued up meanwhile goes in one pipelined round trip, in order.
            batch = [await self._outbox.get()]
            while len(batch) < 256 and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.publish(self.channel, message)
                    await pipe.execute()
                self.sent += len(batch)
            except (RedisError, OSError) as exc:
                log.warning("could not publish %d event(s) to the other workers: %r",
                            len(batch), exc)
            finally:
                for _ in batch:
                    self._outbox.task_done()

    async def _listen_loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                async for message in self._pubsub.listen():
                    backoff = 0.5
                    if message.get("type") == "message":
                        self._deliver(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("event bus lost Redis (%r); resubscribing", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.subscribe(self.channel)

    def _deliver(self, data: bytes | str) -> None:
        try:
            envelope = json.loads(data)
            if envelope.get("w") == self.worker_id:
                return  # our own, already delivered here
            cls = EVENT_TYPES[envelope["type"]]
            event = cls.model_validate(envelope["event"])
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            log.warning("ignored a malformed event from the bus: %s", type(exc).__name__)
            return
        self.received += 1
        self.hub.deliver_remote(event)  # type: ignore[arg-type]
