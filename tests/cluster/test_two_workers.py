"""Two ``avatarbot run`` workers on one PostgreSQL database and one Redis, behind no proxy.

A Slack session started on worker A is watched by a viewer whose WebSocket is on worker B: a thread
message sent to A shows up on B's page. The worker holding the session's lease (A, its starter,
unless B's reaper tick claimed it first) is then SIGKILLed: the other takes the lease within
LEASE_TTL_S plus one reaper tick, and the session can still be stopped with the vendor closed and
the ledger clean. (Three workers behind nginx: tests/cluster/test_behind_nginx.py.)
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.backends import open_store
from tests.cluster.harness import Workers, fake_vendors, lease_value, worker_env
from tests.process import cli
from tests.slack.conftest import SlackHarness
from tests.test_product import AVATAR

TTL_S, TICK_S = 2, 1


async def test_two_workers_share_events_and_a_killed_workers_session(
    fakes, pg_url, redis_client, prefix, tmp_path
):
    slack, a2e = fakes
    await (await open_store("postgres", pg_url)).close()  # the tables, empty
    env = worker_env(pg_url=pg_url, prefix=prefix, tmp_path=tmp_path, lease_ttl_s=TTL_S,
                     reaper_interval_s=TICK_S, **fake_vendors(slack, a2e))
    await cli(env, "credits", "grant", "slack:T1", "100")
    async with Workers(env, tmp_path) as workers:
        a, b = await workers.start("a", "b")
        harness = SlackHarness(slack, None, a.url, None)
        try:
            status, _ = await harness.command(f"start a2e:{AVATAR} 3")
            assert status == 200
            (post,) = await slack.wait_for("chat.postMessage", within=15)
            viewer, stop = post.params["blocks"][1]["elements"]
            session_id, token = stop["value"], viewer["url"].rsplit("/v/", 1)[1]
            # A claims it as it starts it (unless B's reaper tick got there first).
            async with asyncio.timeout(10):
                while not (value := await lease_value(redis_client, prefix, session_id)):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            holder = workers.by_lease(value)
            assert holder is not None

            async with aiohttp.ClientSession() as http, http.ws_connect(
                f"{b.url}/v/{token}/ws"
            ) as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["state"] == "live"
                # A thread message reaches worker A; the viewer on worker B sees it.
                status, _ = await harness.thread_message("Who are you?", post.result["ts"])
                assert status == 200
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads((await ws.receive()).data)
                        if message.get("type") == "transcript":
                            break
                assert message["speaker"] == "user" and message["text"] == "Who are you?"
        finally:
            await harness.http.close()

        # The worker tending it dies without a word: the other takes it over within the bound.
        other = b if holder is a else a
        await workers.kill(holder.name)
        killed = time.monotonic()
        async with asyncio.timeout(TTL_S + TICK_S + 5):
            while not other.holds(await lease_value(redis_client, prefix, session_id)):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert time.monotonic() - killed <= TTL_S + TICK_S + 1.5
        assert a2e.open_rooms() != []  # a vendor session survives its worker
    # The survivor shut down cleanly, leaving the vendor session for a worker to come; ended here,
    # nothing is lost and the ledger adds up.
    await cli(env, "sessions", "stop", session_id)
    assert a2e.open_rooms() == []
    assert "ledger ok" in await cli(env, "ledger", "verify")
    assert not (tmp_path / "never-made.db").exists()
