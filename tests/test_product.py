"""The whole product as an operator runs it: ``avatarbot run`` in its own process, configured only
through the environment, against fake Discord, fake Slack and a fake vendor; then SIGTERM. On a
SQLite file and on PostgreSQL (``DATABASE_URL``)."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.parse

import httpx
import pytest

from tests.backends import BACKENDS, open_store
from tests.discord.conftest import MEMBER_PERMS
from tests.discord.test_session_flow import start_session
from tests.fakes.a2e import FakeA2E
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.process import BIN, cli, free_port
from tests.slack.conftest import sign, trigger_id

AVATAR = "676e1f054c86ff839eae2cc3"
SLACK_SECRET = "product-test-signing-secret-0123"


@pytest.fixture(params=BACKENDS)
def database(request, tmp_path) -> dict[str, str]:
    """The environment that picks the database: a new SQLite file, or this run's PostgreSQL."""
    if request.param == "sqlite":
        return {"DATABASE_PATH": str(tmp_path / "product.db")}
    return {"DATABASE_URL": request.getfixturevalue("pg_url"),
            "DATABASE_PATH": str(tmp_path / "never-made.db")}


@pytest.fixture
async def fakes():
    discord_fake = await FakeDiscord().start()
    slack = await FakeSlack().start()
    slack.add_workspace("T1", "xoxb-product-test", channels=("C1",))
    slack.add_user("U1")
    async with FakeA2E() as a2e:
        yield discord_fake, slack, a2e
    await slack.close()
    await discord_fake.close()


async def test_run_serves_discord_slack_and_viewer_then_shuts_down_cleanly(
    tmp_path, fakes, database
):
    discord_fake, slack, a2e = fakes
    if "DATABASE_URL" in database:  # empty tables, as a new SQLite file would have
        await (await open_store("postgres", database["DATABASE_URL"])).close()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SLACK_", "A2E_"))},
        **database, "PORT": str(port),
        "DISCORD_TOKEN": "discord-product-token", "DISCORD_API_BASE": discord_fake.api_base,
        "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{discord_fake.port}/gateway",
        "SLACK_SIGNING_SECRET": SLACK_SECRET, "SLACK_BOT_TOKEN": "xoxb-product-test",
        "SLACK_API_URL": slack.api_url, "A2E_API_KEY": a2e.api_key, "A2E_BASE_URL": a2e.url,
    }
    await cli(env, "credits", "grant", "discord:111", "100")
    await cli(env, "credits", "grant", "slack:T1", "100")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "avatarbot"), "run", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        banner = await read_banner(proc)
        for line in ("[on ] provider a2e", "[on ] provider local", "[on ] platform discord",
                     "[on ] platform slack", "[off] provider heygen"):
            assert line in banner
        await discord_fake.wait_ready(timeout=15)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200

            alice = discord_fake.add_member(discord_fake.user("alice"), [], MEMBER_PERMS)
            _, anchor, _ = await start_session(
                discord_fake, alice, avatar=f"a2e:{AVATAR}", minutes=3
            )
            viewer_url = anchor["components"][0]["components"][0]["url"]
            assert viewer_url.startswith(f"{base}/v/")
            page = await http.get(viewer_url)
            assert page.status_code == 200 and "Linda" in page.text
            assert a2e.api_key not in page.text

            body = urllib.parse.urlencode({
                "team_id": "T1", "channel_id": "C1", "user_id": "U1", "command": "/avatar",
                "text": f"start a2e:{AVATAR} 3", "response_url": slack.response_url("p1"),
                "trigger_id": trigger_id(), "api_app_id": "A0AVATAR",
            })
            headers = sign(body, secret=SLACK_SECRET) | {
                "Content-Type": "application/x-www-form-urlencoded"
            }
            answer = await http.post("/slack/events", content=body, headers=headers)
            assert answer.status_code == 200
            await slack.wait_for("chat.postMessage", within=10)
            await wait_until(lambda: len(a2e.open_rooms()) == 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, rest.decode()[-2000:]
    assert a2e.open_rooms() == []  # paid sessions ended at shutdown
    assert "ledger ok" in await cli(env, "ledger", "verify")
    assert not (tmp_path / "never-made.db").exists(), "DATABASE_URL set, yet the file was used"
    assert "no sessions" in await cli(env, "sessions", "list")
    log = banner + rest.decode()
    for secret in ("discord-product-token", "xoxb-product-test", SLACK_SECRET, a2e.api_key):
        assert secret not in log


async def read_banner(proc, within: float = 30) -> str:
    lines = []
    async with asyncio.timeout(within):
        while not any("[" in line and "playground" in line for line in lines):
            line = (await proc.stdout.readline()).decode()
            assert line, "avatarbot run exited early:\n" + "".join(lines)
            lines.append(line)
    return "".join(lines)


async def wait_until(check, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling the fake vendor's state
            await asyncio.sleep(0.05)
