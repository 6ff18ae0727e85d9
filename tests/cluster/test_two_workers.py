"""Two ``avatarbot run`` workers on one PostgreSQL database and one Redis, behind no proxy.

A Slack session started on worker A is watched by a viewer whose WebSocket is on worker B: a thread
message sent to A shows up on B's page. Worker A is then SIGKILLed: B takes its session's lease
within LEASE_TTL_S plus one reaper tick, and the session can still be stopped with the vendor
closed and the ledger clean.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest

from tests.backends import open_store
from tests.cluster.conftest import REDIS_URL
from tests.fakes.a2e import FakeA2E
from tests.fakes.slack import FakeSlack
from tests.process import BIN, cli, free_port
from tests.slack.conftest import SECRET, SlackHarness
from tests.test_product import AVATAR, read_banner

TTL_S, TICK_S = 2, 1


@pytest.fixture
async def fakes():
    slack = await FakeSlack().start()
    slack.add_workspace("T1", "xoxb-cluster-test", channels=("C1",))
    slack.add_user("U1")
    async with FakeA2E() as a2e:
        yield slack, a2e
    await slack.close()


async def test_two_workers_share_events_and_a_killed_workers_session(
    fakes, pg_url, redis_client, prefix, tmp_path
):
    slack, a2e = fakes
    await (await open_store("postgres", pg_url)).close()  # the tables, empty
    base_env = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("DISCORD_", "SLACK_", "A2E_", "REDIS_", "DATABASE_"))},
        "DATABASE_URL": pg_url, "DATABASE_PATH": str(tmp_path / "never-made.db"),
        "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix, "LEASE_TTL_S": str(TTL_S),
        "REAPER_INTERVAL_S": str(TICK_S), "SECRET_KEY": "one-secret-for-every-worker-0123",
        "SLACK_SIGNING_SECRET": SECRET, "SLACK_BOT_TOKEN": "xoxb-cluster-test",
        "SLACK_API_URL": slack.api_url, "A2E_API_KEY": a2e.api_key, "A2E_BASE_URL": a2e.url,
    }
    await cli(base_env, "credits", "grant", "slack:T1", "100")
    ports = {"a": free_port(), "b": free_port()}
    procs = {}
    try:
        for name, port in ports.items():
            procs[name] = await asyncio.create_subprocess_exec(
                str(BIN / "avatarbot"), "run", env=base_env | {"PORT": str(port)}, cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        for proc in procs.values():
            await read_banner(proc)
        a = SlackHarness(slack, None, f"http://127.0.0.1:{ports['a']}", None)
        try:
            status, _ = await a.command(f"start a2e:{AVATAR} 3")
            assert status == 200
            (post,) = await slack.wait_for("chat.postMessage", within=15)
            viewer, stop = post.params["blocks"][1]["elements"]
            session_id, token = stop["value"], viewer["url"].rsplit("/v/", 1)[1]
            lease_key = f"{prefix}lease:session:{session_id}"
            owner = (await redis_client.get(lease_key) or b"").decode()
            assert f"-{procs['a'].pid}-" in owner  # A started it, A tends it

            async with aiohttp.ClientSession() as http, http.ws_connect(
                f"http://127.0.0.1:{ports['b']}/v/{token}/ws"
            ) as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["state"] == "live"
                # A thread message reaches worker A; the viewer on worker B sees it.
                status, _ = await a.thread_message("Who are you?", post.result["ts"])
                assert status == 200
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads((await ws.receive()).data)
                        if message.get("type") == "transcript":
                            break
                assert message["speaker"] == "user" and message["text"] == "Who are you?"
        finally:
            await a.http.close()

        # Worker A dies without a word: B takes its session over within the bound.
        procs["a"].send_signal(signal.SIGKILL)
        await procs["a"].wait()
        killed = time.monotonic()
        async with asyncio.timeout(TTL_S + TICK_S + 5):
            while f"-{procs['b'].pid}-" not in (  # noqa: ASYNC110 - polling Redis
                (await redis_client.get(lease_key) or b"").decode()
            ):
                await asyncio.sleep(0.1)
        assert time.monotonic() - killed <= TTL_S + TICK_S + 1.5
        assert a2e.open_rooms() != []  # a vendor session survives its worker
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.communicate(), 40)
    # B shut down cleanly, leaving the vendor session for a worker to come; ended here, nothing
    # is lost and the ledger adds up.
    await cli(base_env, "sessions", "stop", session_id)
    assert a2e.open_rooms() == []
    assert "ledger ok" in await cli(base_env, "ledger", "verify")
    assert not (tmp_path / "never-made.db").exists()
