"""Which installation the real slack-bolt app asks for, for each published Slack payload.

Each payload is signed and dispatched into an AsyncApp whose `authorize` records the ids Bolt
passes it; those are the ids every listener then sees in `context`. The fixtures show where that
answer is the session's workspace and where it is not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slack"
SECRET = "fixture-signing-secret"


async def dispatch(name: str) -> tuple[tuple[str | None, str | None], int]:
    """Dispatch the fixture into Bolt.

    Returns the (enterprise_id, team_id) the listener's context carries and how many times
    Bolt called `authorize` (the token look-up) for it.
    """
    raw = (FIXTURES / name).read_text(encoding="utf-8")
    form = name.endswith(".form")
    seen: list[tuple[str | None, str | None]] = []
    authorized: list[tuple[str | None, str | None]] = []

    async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        authorized.append((enterprise_id, team_id))
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id,
                               bot_token="xoxb-fixture", bot_user_id="UBOT", bot_id="BBOT")

    # process_before_response: listeners finish before the HTTP answer, so `seen` is complete.
    app = AsyncApp(signing_secret=SECRET, authorize=authorize, process_before_response=True)

    @app.command("/avatar")
    async def command(ack: Any, context: Any) -> None:
        seen.append((context.enterprise_id, context.team_id))
        await ack()

    @app.event("message")
    @app.event("app_uninstalled")
    @app.event("tokens_revoked")
    async def event(context: Any) -> None:
        seen.append((context.enterprise_id, context.team_id))

    stamp = str(int(time.time()))
    headers = {
        "content-type": "application/x-www-form-urlencoded" if form else "application/json",
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": SignatureVerifier(SECRET).generate_signature(
            timestamp=stamp, body=raw),
    }
    response = await app.async_dispatch(AsyncBoltRequest(body=raw, headers=headers))
    assert response.status == 200, response.body
    assert len(seen) == 1 and authorized in ([], seen)
    return seen[0], len(authorized)


@pytest.mark.parametrize(
    ("name", "ids"),
    [
        ("slash_command_say_escaped.form", ("E0001", "T0001")),
        ("event_message_thread_reply.json", ("E111", "T111")),  # a Grid workspace: both ids
        ("event_message_thread_broadcast.json", ("E111", "T111")),
        ("event_message_image_only.json", (None, "T111")),
    ],
)
async def test_bolt_authorizes_the_payload_s_workspace(
    name: str, ids: tuple[str | None, str]
) -> None:
    assert await dispatch(name) == (ids, 1)


@pytest.mark.parametrize(
    ("name", "ids"),
    [("event_app_uninstalled.json", (None, "T123ABC456")),
     ("event_tokens_revoked.json", (None, "TXXXXXXXX"))],
)
async def test_uninstall_events_arrive_without_a_token_lookup(
    name: str, ids: tuple[str | None, str]
) -> None:
    # Bolt skips authorize for these (the tokens are gone); the handler gets the ids only.
    assert await dispatch(name) == (ids, 0)


async def test_slack_connect_event_is_authorized_for_the_other_organisation() -> None:
    # The sender is in E013Y3SHLAY/T014GJXU940, but Bolt authorizes the one installation Slack
    # listed in `authorizations`: the session must be found by its thread, not by this workspace.
    payload = json.loads((FIXTURES / "event_message_slack_connect.json").read_text())
    assert payload["event"]["team"] == "T014GJXU940"
    assert await dispatch("event_message_slack_connect.json") == ((None, "T0G9PQBBK"), 1)
    listed = json.loads((FIXTURES / "apps_event_authorizations_list.json").read_text())
    assert {a["team_id"] for a in listed["authorizations"]} == {"T0G9PQBBK", "T014GJXU940"}
