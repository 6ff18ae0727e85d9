"""Sharding settings, a sharded client in one process, and the fake's sharding (Discord's rules).

Two workers each holding one shard, on a shared PostgreSQL database and Redis, are in
tests/cluster/test_discord_shards.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest

from bot.core.errors import ConfigError
from bot.core.pacing import LocalPacingGate
from bot.platforms.discord.client import AvatarBot, ShardedAvatarBot, build_discord_client
from bot.platforms.discord.shards import guild_shard, identify_bucket
from bot.settings import load_settings
from tests.discord.conftest import TOKEN, Stack, make_settings
from tests.fakes.discord import MESSAGE_CONTENT, FakeDiscord

G0, C0 = (2000 << 22) | 3, 700001  # shard 0 of 2
G1, C1 = (2001 << 22) | 3, 700002  # shard 1 of 2


@pytest.mark.parametrize(("values", "message"), [
    ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1-2", "REDIS_URL": "redis://r"},
     "shard 2 does not exist; with DISCORD_SHARD_COUNT=2 the shards are 0-1"),
    ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "0..1", "REDIS_URL": "redis://r"},
     "'0..1' is not a shard id or range; write ids and ranges like 0-1 or 2,3"),
    ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "3-1", "REDIS_URL": "redis://r"},
     "'3-1': the range runs backwards (write 1-3)"),
    ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "0-1,1", "REDIS_URL": "redis://r"},
     "shard 1 is listed twice"),
    ({"DISCORD_SHARD_IDS": "0"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
    ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT: Input should be greater than or equal"),
    ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "0-1"},
     "DISCORD_SHARD_IDS holds only some of the shards; the others run in other workers, "
     "which needs REDIS_URL"),
])
def test_bad_shard_settings_are_one_clear_error(
    values: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None)
    assert message in str(err.value)


@pytest.mark.parametrize(("ids", "expected"), [
    ("0-1", [0, 1]), ("2,3", [2, 3]), (" 0 - 2 , 5 ", [0, 1, 2, 5]), ("", [0, 1, 2, 3, 4, 5]),
])
def test_shard_ranges(ids: str, expected: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "6")
    monkeypatch.setenv("DISCORD_SHARD_IDS", ids)
    monkeypatch.setenv("REDIS_URL", "redis://r")
    assert load_settings(_env_file=None).discord_shards() == (6, expected)


def test_discords_formulas() -> None:
    # docs/discord-sharding.md: shard_id = (guild_id >> 22) % num_shards and
    # rate_limit_key = shard_id % max_concurrency.
    assert guild_shard(G0, 2) == 0 and guild_shard(G1, 2) == 1
    assert guild_shard(G1, 1) == 0
    assert [identify_bucket(s, 16) for s in (0, 15, 16, 31)] == [0, 15, 0, 15]
    assert identify_bucket(5, 1) == 0


@pytest.fixture
async def fake2() -> Any:
    server = await FakeDiscord(guild_id=G0, channel_id=C0).start()
    server.add_guild(G1, C1)
    yield server
    await server.close()


async def _run(client: AvatarBot) -> asyncio.Task[None]:
    task = asyncio.create_task(client.start(TOKEN))
    await asyncio.wait_for(client.wait_until_ready(), 10)
    return task


async def _close(client: AvatarBot, task: asyncio.Task[None]) -> None:
    await client.close()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)


def _client(fake: FakeDiscord, stack: Stack, tmp_path: Path, **values: Any) -> AvatarBot:
    settings = make_settings(fake, tmp_path, **values)
    return build_discord_client(
        settings=settings, service=stack.service, tenants=stack.tenants, bindings=stack.bindings,
        links=stack.links, guild_ready_timeout=0.05,
        identify_gate=LocalPacingGate(0.3),  # Discord's 5 s, shortened for the test
    )


async def test_without_the_settings_one_unsharded_connection(
    fake2: FakeDiscord, stack: Stack, tmp_path: Path
) -> None:
    client = _client(fake2, stack, tmp_path)
    assert type(client) is AvatarBot and not isinstance(client, discord.AutoShardedClient)
    task = await _run(client)
    try:
        (identify,) = fake2.identifies
        assert "shard" not in identify  # as before sharding: Discord treats it as [0, 1]
        assert sorted(g.id for g in client.guilds) == [G0, G1]
    finally:
        await _close(client, task)


async def test_one_process_holding_every_shard_paces_identifies_by_bucket(
    fake2: FakeDiscord, stack: Stack, tmp_path: Path
) -> None:
    fake2.max_concurrency = 1  # both shards in bucket 0: one IDENTIFY per interval
    client = _client(fake2, stack, tmp_path, discord_shard_count=2)
    assert isinstance(client, ShardedAvatarBot)
    task = await _run(client)
    try:
        assert [i["shard"] for i in fake2.identifies] == [[0, 2], [1, 2]]
        first, second = fake2.identified_at
        assert second - first >= 0.25  # the gate's 0.3 s (measured from before the first)
        assert sorted(g.id for g in client.guilds) == [G0, G1]
        assert client.get_guild(G1) is not None and client.get_guild(G1).shard_id == 1
        # discord.py routes a guild to its shard's connection by the same formula.
        assert client.holds_guild(G0) and client.holds_guild(G1)
    finally:
        await _close(client, task)


async def test_a_sharded_bot_refused_message_content_says_how_to_fix_it(
    fake2: FakeDiscord, stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake2.reject_message_content = True
    client = _client(fake2, stack, tmp_path, discord_shard_count=1)
    with pytest.raises(discord.PrivilegedIntentsRequired):
        await asyncio.wait_for(client.start(TOKEN), 10)
    assert fake2.identifies[0]["intents"] & MESSAGE_CONTENT
    err = capsys.readouterr().err
    assert "close 4014" in err and "does not fall back to mention mode" in err
    assert "MESSAGE CONTENT INTENT" in err
    await client.close()


async def test_the_fake_shards_as_discord_documents(fake2: FakeDiscord) -> None:
    fake2.recommended_shards, fake2.max_concurrency = 2, 16
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake2.api_base}/gateway/bot") as resp:
            body = await resp.json()
        assert body["url"] == fake2.gateway_url and body["shards"] == 2
        assert set(body["session_start_limit"]) == {
            "total", "remaining", "reset_after", "max_concurrency"}
        assert body["session_start_limit"]["max_concurrency"] == 16

        # An IDENTIFY with a shard outside 0..num_shards-1: close 4010 (Invalid shard).
        async with http.ws_connect(fake2.gateway_url) as ws:
            assert (await ws.receive_json())["op"] == 10
            await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 0,
                                               "shard": [2, 2], "properties": {}}})
            closed = await ws.receive()
            assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4010

        # A shard gets READY with its guilds only, and only their events.
        async with http.ws_connect(fake2.gateway_url) as ws:
            await ws.receive_json()
            await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 0,
                                               "shard": [1, 2], "properties": {}}})
            ready = await ws.receive_json()
            assert ready["t"] == "READY" and ready["d"]["shard"] == [1, 2]
            assert [g["id"] for g in ready["d"]["guilds"]] == [str(G1)]
            created = await ws.receive_json()
            assert created["t"] == "GUILD_CREATE" and created["d"]["id"] == str(G1)
            member = fake2.add_member(fake2.user("carol"), [])
            await fake2.user_message(member, str(C0), "on shard 0")
            await fake2.user_message(member, str(C1), "on shard 1")
            got = await ws.receive_json()
            assert got["t"] == "MESSAGE_CREATE" and got["d"]["content"] == "on shard 1"
            assert got["d"]["guild_id"] == str(G1)


async def test_a_sharded_client_asks_gateway_bot_once_and_warns_of_too_few_shards(
    fake2: FakeDiscord, stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake2.recommended_shards = 4
    # Only DISCORD_API_BASE set: the gateway URL comes from the same GET /gateway/bot.
    client = _client(fake2, stack, tmp_path, discord_shard_count=1, discord_gateway_url=None)
    task = await _run(client)
    try:
        assert len(fake2.calls_to("GET", r"^/gateway/bot$")) == 1
        assert "Discord recommends 4 shards for this bot; DISCORD_SHARD_COUNT is 1" in caplog.text
        assert [i["shard"] for i in fake2.identifies] == [[0, 1]]
    finally:
        await _close(client, task)


async def test_a_sharded_client_whose_gateway_bot_is_refused_still_connects_one_at_a_time(
    fake2: FakeDiscord, stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake2.fail("GET", r"^/gateway/bot$", status=403)  # e.g. a REST proxy that does not pass it
    client = _client(fake2, stack, tmp_path, discord_shard_count=2)
    task = await _run(client)
    try:
        assert "GET /gateway/bot failed (403); identifying one shard at a time" in caplog.text
        assert sorted(i["shard"] for i in fake2.identifies) == [[0, 2], [1, 2]]
        assert client.max_concurrency == 1
    finally:
        await _close(client, task)
