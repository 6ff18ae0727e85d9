"""Discord shards split across two workers sharing one PostgreSQL database and one Redis.

Each worker is a real sharded discord.py client (``ShardedAvatarBot``) on its own session
stack (store, hub bridged by the Redis event bus, service), both against one fake Discord that
shards as Discord documents it (docs/discord-sharding.md). The vendor is the in-memory fake,
one vendor state shared by both workers, as a real vendor is.

Guild ``G0`` is on shard 0 (worker A), guild ``G1`` on shard 1 (worker B):
``(guild_id >> 22) % 2``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from bot.cluster import RedisEventBus, RedisLeases, RedisPacingGate
from bot.core.events import EventHub, Transcript
from bot.core.links import ViewerLinks
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.discord.client import AvatarBot, ShardedAvatarBot, build_discord_client
from bot.platforms.discord.shards import IDENTIFY_INTERVAL_S, hold_shards, shard_lease
from bot.storage.postgres import PostgresStore
from tests.backends import open_store
from tests.cluster.conftest import REDIS_URL
from tests.discord.conftest import TOKEN, _restore_endpoints, callback, final_text, make_settings
from tests.fakes.discord import MEMBER_PERMS, FakeDiscord
from tests.fakes.provider import FakeProvider

__all__ = ["_restore_endpoints"]  # the autouse fixture putting discord.py's endpoints back

G0, C0 = (1000 << 22) | 5, 900001  # shard 0 of 2
G1, C1 = (1001 << 22) | 9, 900002  # shard 1 of 2


class Worker:
    """One worker: its own store connection, hub + Redis bus, service and sharded client."""

    def __init__(self, name: str, client: AvatarBot, store: PostgresStore,
                 provider: FakeProvider, hub: EventHub) -> None:
        self.name = name
        self.client = client
        self.store = store
        self.provider = provider
        self.hub = hub


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord(guild_id=G0, channel_id=C0).start()
    server.add_guild(G1, C1)
    # Discord's published limit for large bots lets shards 0 and 1 identify at once.
    server.max_concurrency = 16
    yield server
    await server.close()


@pytest.fixture
async def workers(fake, pg_url, redis_client, prefix, tmp_path) -> AsyncIterator[dict[str, Worker]]:
    vendor_state: dict[str, dict[str, Any]] = {}
    links = ViewerLinks(b"0123456789abcdef0123", "http://viewer.test")
    async with AsyncExitStack() as stack:
        out = {}
        for i, name in enumerate(("a", "b")):
            store = await open_store("postgres", pg_url, fresh=(i == 0))
            stack.push_async_callback(store.close)
            hub = EventHub()
            await stack.enter_async_context(
                RedisEventBus(redis_client, hub, prefix=prefix, worker_id=f"worker-{name}"))
            provider = FakeProvider(hub)
            provider.open = vendor_state  # one vendor behind both workers
            service = SessionService(store=store, providers={"fake": provider}, events=hub)
            settings = make_settings(fake, tmp_path, discord_shard_count=2,
                                     discord_shard_ids=str(i), redis_url=REDIS_URL,
                                     redis_prefix=prefix)
            client = build_discord_client(
                settings=settings, service=service, tenants=TenantService(store),
                bindings=ChatBindings(store), links=links, guild_ready_timeout=0.05,
                identify_gate=RedisPacingGate(  # as bot/app.py wires it for workers
                    redis_client, prefix=prefix, name="discord-identify",
                    worker_id=f"worker-{name}", interval_s=IDENTIFY_INTERVAL_S))
            client.relay.edit_interval_s = 0.2
            task = asyncio.create_task(client.start(TOKEN))
            stack.push_async_callback(_stop, client, task)
            out[name] = Worker(name, client, store, provider, hub)
        for w in out.values():
            await asyncio.wait_for(w.client.wait_until_ready(), 10)
            await asyncio.wait_for(w.client.relay.subscribed.wait(), 5)
        await out["a"].store.grant(f"discord:{G0}", 100, "test")
        await out["a"].store.grant(f"discord:{G1}", 100, "test")
        yield out


async def _stop(client: AvatarBot, task: asyncio.Task[None]) -> None:
    await client.close()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)


async def start_in(fake: FakeDiscord, member: dict[str, Any], channel_id: int,
                   **options: Any) -> dict[str, Any]:
    """``/avatar start`` in a guild's channel; the session's thread (waited for)."""
    options = {"avatar": "fake:ava-1", "minutes": 5} | options
    pending = await fake.slash(member, "start", channel_id=str(channel_id), **options)
    assert (await callback(pending))["type"] == 5
    reply = await final_text(fake, pending)
    thread = await fake.wait_for(lambda: next(
        (t for t in fake.threads() if t["parent_id"] == str(channel_id)), None), 10)
    assert f"<#{thread['id']}>" in reply
    return thread


def lines(fake: FakeDiscord, thread_id: str, text: str) -> list[dict[str, Any]]:
    """The thread's bot messages holding ``text`` (an edit appends to the last message)."""
    return [m for m in fake.channel_messages(thread_id)
            if m["author"]["id"] == fake.bot_user["id"] and text in m["content"]]


async def test_each_worker_gets_only_its_shards_guilds(fake, workers) -> None:
    a, b = workers["a"].client, workers["b"].client
    assert isinstance(a, ShardedAvatarBot) and isinstance(b, ShardedAvatarBot)
    # IDENTIFY carries [shard_id, num_shards]; each connection got READY for its guilds only.
    assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
    assert fake.connected_shards() == [(0, 2), (1, 2)]
    assert [g.id for g in a.guilds] == [G0]
    assert [g.id for g in b.guilds] == [G1]
    assert a.holds_guild(G0) and not a.holds_guild(G1)
    assert b.holds_guild(G1) and not b.holds_guild(G0)


async def test_a_start_on_shard_1_is_handled_by_its_worker_and_lines_are_posted_once(
    fake, workers
) -> None:
    a, b = workers["a"], workers["b"]
    alice = fake.add_member(fake.user("alice"), [], MEMBER_PERMS)

    thread = await start_in(fake, alice, C1)
    assert thread["guild_id"] == str(G1)
    # Only worker B (shard 1) got the interaction and started the vendor session.
    assert len(b.provider.called("start")) == 1 and a.provider.called("start") == []
    (record,) = await b.store.open_sessions(f"discord:{G1}")

    # A thread message reaches the vendor through B; the answer is posted once, by B.
    await fake.user_message(alice, thread["id"], "what is two plus two?")
    await fake.wait_for(lambda: lines(fake, thread["id"], "You asked: what is two plus two?"), 10)
    assert b.provider.called("ask") == ["what is two plus two?"]
    assert a.provider.called("ask") == []

    # The vendor's words arrive at worker A (which does not hold shard 1): A does not post
    # them, B (holding the guild's shard) gets them through Redis and posts them, once.
    a.hub.publish(Transcript(session_id=record.id, speaker="avatar", text="Hello from A's side."))
    await fake.wait_for(lambda: lines(fake, thread["id"], "Hello from A's side."), 10)

    # Worker A ends the session (as `avatarbot sessions stop` on any worker would): the summary
    # and the disabled Stop button come from B, once.
    await a.client.service.stop(record.id, "stopped by an operator")
    await fake.wait_for(lambda: lines(fake, thread["id"], "🏁"), 10)
    anchor = fake.messages[thread["id"]]
    await fake.wait_for(lambda: anchor["components"][0]["components"][-1].get("disabled"), 10)

    # Let any duplicate arrive before counting: both relays have drained the bus by now.
    await asyncio.sleep(0.5)
    for text in ("You asked: what is two plus two?", "Hello from A's side.", "🏁"):
        assert len(lines(fake, thread["id"], text)) == 1, text
        assert sum(m["content"].count(text) for m in fake.channel_messages(thread["id"])) == 1


async def test_a_session_on_shard_0_is_posted_by_worker_a_only(fake, workers) -> None:
    a, b = workers["a"], workers["b"]
    bob = fake.add_member(fake.user("bob"), [], MEMBER_PERMS)
    thread = await start_in(fake, bob, C0)
    assert len(a.provider.called("start")) == 1 and b.provider.called("start") == []
    (record,) = await a.store.open_sessions(f"discord:{G0}")
    # Words published on B: posted by A (the shard-0 holder), once.
    b.hub.publish(Transcript(session_id=record.id, speaker="avatar", text="Words seen on B."))
    await fake.wait_for(lambda: lines(fake, thread["id"], "Words seen on B."), 10)
    await asyncio.sleep(0.5)
    assert sum(m["content"].count("Words seen on B.")
               for m in fake.channel_messages(thread["id"])) == 1
    await a.client.service.stop(record.id, "done")



async def test_workers_share_discords_identify_buckets(redis_client, prefix) -> None:
    def gate(worker: str) -> RedisPacingGate:
        return RedisPacingGate(redis_client, prefix=prefix, name="discord-identify",
                               worker_id=worker, interval_s=2.0)

    a, b = gate("a"), gate("b")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await a.wait(0)  # worker A identifies a shard of bucket 0
    await b.wait(1)  # bucket 1 is free: B goes on at once, while A's bucket-0 pass still holds
    assert await redis_client.get(f"{prefix}discord-identify:0") == b"a"
    assert await redis_client.get(f"{prefix}discord-identify:1") == b"b"
    await b.wait(0)  # bucket 0 again: B waits out A's interval
    assert loop.time() - began >= 1.9
    assert await redis_client.get(f"{prefix}discord-identify:0") == b"b"


async def test_a_shard_given_to_two_workers_is_connected_by_one_only(
    redis_client, prefix, caplog: pytest.LogCaptureFixture
) -> None:
    a = RedisLeases(redis_client, prefix=prefix, ttl_s=10.0, worker_id="a")
    b = RedisLeases(redis_client, prefix=prefix, ttl_s=10.0, worker_id="b")
    await asyncio.wait_for(hold_shards(a, [0, 1], retry_s=0.05), 5)
    # B was also given shard 1: it waits instead of connecting a second copy, and says why.
    waiting = asyncio.create_task(hold_shards(b, [1], retry_s=0.05))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    assert "Discord shard(s) 1 are held by another worker" in caplog.text
    assert "two workers have the same shard in DISCORD_SHARD_IDS" in caplog.text
    # A stops (its leases released on the way out): B takes the shard and connects.
    await a.release([shard_lease(0), shard_lease(1)])
    await asyncio.wait_for(waiting, 5)
    assert b.holds(shard_lease(1))


async def test_a_standby_takes_all_its_shards_or_none(redis_client, prefix) -> None:
    """A standby for shards 0-1 while A holds 0 and C holds 1: A dies, C lives on."""
    a = RedisLeases(redis_client, prefix=prefix, ttl_s=10.0, worker_id="a")
    c = RedisLeases(redis_client, prefix=prefix, ttl_s=10.0, worker_id="c")
    standby = RedisLeases(redis_client, prefix=prefix, ttl_s=10.0, worker_id="standby")
    await asyncio.wait_for(hold_shards(a, [0], retry_s=0.05), 5)
    await asyncio.wait_for(hold_shards(c, [1], retry_s=0.05), 5)
    waiting = asyncio.create_task(hold_shards(standby, [0, 1], retry_s=0.05))
    await a.release([shard_lease(0)])  # A is gone; its restart must still get shard 0
    await asyncio.sleep(0.5)
    assert not waiting.done()
    assert not standby.holds(shard_lease(0))  # not kept while the standby waits for shard 1
    await asyncio.wait_for(hold_shards(a, [0], retry_s=0.05), 5)
    waiting.cancel()
