"""Two ``avatarbot run`` workers, one Discord shard each, on PostgreSQL and Redis.

Configured only through the environment (``DISCORD_SHARD_COUNT=2``, ``DISCORD_SHARD_IDS`` 0 and
1) against the sharding fake Discord and the fake A2E. A start in a guild on shard 1 is handled
by worker B; a question in its thread reaches the vendor; the vendor's answer comes back
through a viewer page connected to worker A, and is posted into the thread once, by B (A does
not hold the guild's shard). A Stop click ends it with one summary, and the ledger is clean.
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp

from tests.backends import open_store
from tests.cluster.conftest import REDIS_URL
from tests.cluster.test_discord_shards import C0, C1, G0, G1, lines, start_in
from tests.discord.conftest import callback
from tests.fakes.a2e import FakeA2E, answer_for
from tests.fakes.discord import MEMBER_PERMS, FakeDiscord
from tests.process import BIN, cli, free_port
from tests.test_product import AVATAR, read_banner


async def _until(check, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling fakes the workers drive
            await asyncio.sleep(0.05)


async def test_two_sharded_workers_split_guilds_and_post_each_line_once(
    pg_url, redis_client, prefix, tmp_path
) -> None:
    fake = await FakeDiscord(guild_id=G0, channel_id=C0).start()
    fake.add_guild(G1, C1)
    fake.max_concurrency = 16
    procs: dict[str, asyncio.subprocess.Process] = {}
    async with FakeA2E() as a2e:
        try:
            await (await open_store("postgres", pg_url)).close()  # the tables, empty
            base_env = {
                **{k: v for k, v in os.environ.items()
                   if not k.startswith(("DISCORD_", "SLACK_", "A2E_", "REDIS_", "DATABASE_"))},
                "DATABASE_URL": pg_url, "DATABASE_PATH": str(tmp_path / "never-made.db"),
                "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
                "SECRET_KEY": "one-secret-for-every-worker-0123",
                "DISCORD_TOKEN": "discord-shard-token", "DISCORD_API_BASE": fake.api_base,
                "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{fake.port}/gateway",
                "DISCORD_SHARD_COUNT": "2",
                "A2E_API_KEY": a2e.api_key, "A2E_BASE_URL": a2e.url,
            }
            await cli(base_env, "credits", "grant", f"discord:{G1}", "100")
            ports = {"a": free_port(), "b": free_port()}
            for shard, (name, port) in enumerate(ports.items()):
                procs[name] = await asyncio.create_subprocess_exec(
                    str(BIN / "avatarbot"), "run", cwd=tmp_path,
                    env=base_env | {"PORT": str(port), "DISCORD_SHARD_IDS": str(shard)},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )
            for proc in procs.values():
                assert "[on ] platform discord" in await read_banner(proc)
            await _until(lambda: fake.connected_shards() == [(0, 2), (1, 2)])
            assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]

            alice = fake.add_member(fake.user("alice"), [], MEMBER_PERMS)
            thread = await start_in(fake, alice, C1, avatar=f"a2e:{AVATAR}", minutes=3)
            anchor = fake.messages[thread["id"]]
            link, stop = anchor["components"][0]["components"]
            session_id = stop["custom_id"].rsplit(":", 1)[1]
            # Worker B got the interaction and started the session: it tends it.
            lease = f"{prefix}lease:session:{session_id}"
            async with asyncio.timeout(10):
                while f"-{procs['b'].pid}-" not in (  # noqa: ASYNC110 - polling Redis
                    (await redis_client.get(lease) or b"").decode()
                ):
                    await asyncio.sleep(0.05)
            (channel,) = a2e.open_rooms()

            token = link["url"].rsplit("/v/", 1)[1]
            async with aiohttp.ClientSession() as http, http.ws_connect(
                f"http://127.0.0.1:{ports['a']}/v/{token}/ws"
            ) as page:  # the viewer's page is on worker A
                assert (await page.receive_json(timeout=10))["state"] == "live"
                question = await fake.user_message(alice, thread["id"], "Who are you?")
                await _until(lambda: a2e.rooms[channel].asked == ["Who are you?"])
                await fake.wait_for(lambda: question["reactions"], 10)
                # The vendor's answer reaches the page, which hands it to worker A.
                for raw in a2e.viewer_messages.pop(channel):
                    await page.send_json({"type": "data", "payload": raw})
                answer = answer_for("Who are you?", a2e.rooms[channel].qa_context)
                await fake.wait_for(lambda: lines(fake, thread["id"], answer), 15)

            click = await fake.click(alice, anchor, stop["custom_id"])
            await callback(click)
            await fake.wait_for(lambda: lines(fake, thread["id"], "🏁"), 15)
            await asyncio.sleep(1.0)  # time for a second copy from the other worker, if any
            texts = [m["content"] for m in fake.channel_messages(thread["id"])]
            assert sum(t.count(answer) for t in texts) == 1, texts
            assert sum(t.startswith("🏁") for t in texts) == 1, texts
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            outputs = {n: await asyncio.wait_for(p.communicate(), 40) for n, p in procs.items()}
            await fake.close()
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name][0].decode()[-2000:]
    assert a2e.open_rooms() == []
    assert "ledger ok" in await cli(base_env, "ledger", "verify")
