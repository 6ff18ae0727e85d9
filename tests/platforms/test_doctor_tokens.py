"""``avatarbot doctor`` asks Slack and Discord (here: the fakes) whether the tokens work.

The real console entry point runs in a subprocess with ``SLACK_API_URL`` / ``DISCORD_API_BASE``
pointing at the fakes, which answer as the platforms do: Slack's ``auth.test`` with
``invalid_auth`` or ``token_revoked``, Discord's ``GET /users/@me`` with 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.platforms.test_setup_slack import avatarbot

SLACK_TOKEN = "xoxb-1111-2222-doctor-secret"
DISCORD_TOKEN = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.doctor-secret-part"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    server.add_workspace("T0DOCTOR", SLACK_TOKEN)
    yield server
    await server.close()


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    server.token = DISCORD_TOKEN
    yield server
    await server.close()


Checks = dict[str, tuple[bool, str]]


async def doctor(tmp_path: Path, env: dict[str, str]) -> tuple[int, Checks, str]:
    """Run ``avatarbot doctor``; (exit code, check name -> (passed, detail), all output)."""
    env = {"DATABASE_PATH": str(tmp_path / "d.db")} | env
    code, out, err = await avatarbot("doctor", env=env, cwd=tmp_path)
    checks = {}
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("ok", "FAIL"):
            name, _, detail = rest.strip().partition("  ")
            checks[name.strip()] = (status == "ok", detail.strip())
    return code, checks, out + err


async def test_slack_token_ok_names_the_workspace_and_bot(tmp_path, slack):
    _, checks, output = await doctor(tmp_path, {"SLACK_BOT_TOKEN": SLACK_TOKEN,
                                                "SLACK_API_URL": slack.api_url})
    assert checks["slack token"] == (True, "bot avatarbot in workspace T0DOCTOR (T0DOCTOR)")
    assert slack.called("auth.test")[0].token == SLACK_TOKEN
    assert SLACK_TOKEN not in output


@pytest.mark.parametrize(("token", "revoked", "error", "advice"), [
    ("xoxb-9999-wrong", False, "invalid_auth", "copy the Bot User OAuth Token"),
    (SLACK_TOKEN, True, "token_revoked", "reinstall the app"),
    ("xapp-1-A1-wrong", False, "invalid_auth", "goes in SLACK_APP_TOKEN"),
])
async def test_slack_bad_token_says_what_to_do(tmp_path, slack, token, revoked, error, advice):
    if revoked:
        slack.revoked.add(token)
    code, checks, output = await doctor(tmp_path, {"SLACK_BOT_TOKEN": token,
                                                   "SLACK_API_URL": slack.api_url})
    passed, detail = checks["slack token"]
    assert code == 1 and not passed
    assert detail.startswith(f"{error}: ") and advice in detail
    assert token not in output


async def test_discord_token_ok_names_the_bot(tmp_path, discord_fake):
    _, checks, output = await doctor(tmp_path, {"DISCORD_TOKEN": DISCORD_TOKEN,
                                                "DISCORD_API_BASE": discord_fake.api_base})
    user = discord_fake.bot_user
    assert checks["discord token"] == (True, f"bot {user['username']} (id {user['id']})")
    assert checks["discord intent"] == (True, "Message Content intent is on")
    assert DISCORD_TOKEN not in output


async def test_discord_wrong_token_is_explained(tmp_path, discord_fake):
    code, checks, output = await doctor(tmp_path, {"DISCORD_TOKEN": "MTIz.wrong.token-secret",
                                                   "DISCORD_API_BASE": discord_fake.api_base})
    passed, detail = checks["discord token"]
    assert code == 1 and not passed
    assert "the token is wrong or was reset" in detail and "Reset Token" in detail
    assert "discord intent" not in checks
    assert "token-secret" not in output


async def test_discord_message_content_intent_off_is_reported(tmp_path, discord_fake):
    discord_fake.reject_message_content = True
    code, checks, _ = await doctor(tmp_path, {"DISCORD_TOKEN": DISCORD_TOKEN,
                                              "DISCORD_API_BASE": discord_fake.api_base})
    assert checks["discord token"][0] is True
    passed, detail = checks["discord intent"]
    assert code == 1 and not passed and "MESSAGE CONTENT INTENT" in detail


async def test_slack_app_token_for_socket_mode(tmp_path, slack):
    slack.app_tokens.add("xapp-1-A0DOCTOR-good-secret")
    env = {"SLACK_API_URL": slack.api_url, "SLACK_APP_TOKEN": "xapp-1-A0DOCTOR-good-secret"}
    _, checks, output = await doctor(tmp_path, env)
    assert checks["slack app token"] == (True, "Socket Mode can connect")
    code, checks, output = await doctor(tmp_path, env | {"SLACK_APP_TOKEN": SLACK_TOKEN})
    passed, detail = checks["slack app token"]
    assert code == 1 and not passed
    assert detail.startswith("invalid_auth: ") and "that is the bot token" in detail
    assert "connections:write" in detail and SLACK_TOKEN not in output
