"""A real Slack app (slack-bolt on our aiohttp app, on an ephemeral port), a fake Slack Web API,
a real SQLite store and session service with the in-memory FakeProvider."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.core.events import EventHub
from bot.core.links import ViewerLinks
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.slack import build_slack, mount_slack
from bot.settings import Settings
from bot.storage.slack_installs import SqliteSlackInstallStore
from bot.storage.sqlite import SqliteStore
from tests.fakes.provider import FakeProvider
from tests.fakes.serve import serve_local
from tests.fakes.slack import FakeSlack, dumps

SECRET = "test-signing-secret-0123456789abcdef"
TEAM = "T1"
TOKEN = "xoxb-1-team-one"
CHANNEL = "C1"
LINK_SECRET = b"link-secret-for-tests-0123456789"


async def eventually(check: Any, within: float = 5.0) -> None:
    """Wait until ``await check()`` is true (work after an ack runs in the background)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling SQLite and the fake's records
            await asyncio.sleep(0.02)


@dataclass
class Stack:
    store: SqliteStore
    hub: EventHub
    provider: FakeProvider
    service: SessionService
    links: ViewerLinks
    installs: SqliteSlackInstallStore = field(init=False)

    def __post_init__(self) -> None:
        # What the composition root gives the Slack adapter, on the same store.
        self.installs = SqliteSlackInstallStore(self.store)

    @property
    def tenants(self) -> TenantService:
        return TenantService(self.store)

    @property
    def bindings(self) -> ChatBindings:
        return ChatBindings(self.store)


@pytest.fixture
async def fake_slack():
    fake = await FakeSlack().start()
    fake.add_workspace(TEAM, TOKEN, channels=(CHANNEL,))
    fake.add_user("U1")
    fake.add_user("U2")
    fake.add_user("UADMIN", admin=True)
    yield fake
    await fake.close()


@pytest.fixture
async def stack(tmp_path):
    store = await SqliteStore.open(tmp_path / "t.db")
    hub = EventHub()
    provider = FakeProvider(hub)
    service = SessionService(store=store, providers={"fake": provider}, events=hub)
    yield Stack(store, hub, provider, service, ViewerLinks(LINK_SECRET, "http://viewer.test"))
    await store.close()


def sign(body: str | bytes, *, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """The headers Slack sends with a request: v0 HMAC-SHA256 over ``v0:<ts>:<body>``."""
    stamp = str(int(time.time()) if ts is None else ts)
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + raw, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


_triggers = itertools.count(13345224609)


def trigger_id() -> str:
    """Return a fresh ``trigger_id``, as Slack sends with every command and interaction.

    Its shape is that of tests/fixtures/slack/slash_command_say_escaped.form.
    """
    return f"{next(_triggers)}.738474920.{secrets.token_hex(10)}"


class SlackHarness:
    """Signed HTTP requests into the real app, as Slack would send them."""

    def __init__(self, fake: FakeSlack, stack: Stack, url: str, adapter: Any) -> None:
        self.fake = fake
        self.stack = stack
        self.url = url
        self.adapter = adapter
        self.http = aiohttp.ClientSession()
        self._events = 0

    async def post(self, body: str, content_type: str, *, headers: dict[str, str] | None = None,
                   path: str = "/slack/events") -> tuple[int, str]:
        hdrs = {"Content-Type": content_type, **(sign(body) if headers is None else headers)}
        async with self.http.post(self.url + path, data=body.encode(), headers=hdrs) as resp:
            return resp.status, await resp.text()

    def command_body(self, text: str, *, user: str = "U1", channel: str = CHANNEL,
                     team: str = TEAM, key: str = "r1", enterprise: str | None = None,
                     org_install: bool = False) -> str:
        # Field names from https://api.slack.com/slash-commands (see
        # tests/fixtures/slack/slash_command_say_escaped.form); a Grid workspace adds
        # enterprise_id/enterprise_name, and is_enterprise_install says an org-wide install.
        form = {
            "token": "legacy", "team_id": team, "team_domain": "one", "channel_id": channel,
            "channel_name": "general", "user_id": user, "user_name": user.lower(),
            "command": "/avatar", "text": text, "api_app_id": "A0AVATAR",
            "is_enterprise_install": "true" if org_install else "false",
            "response_url": self.fake.response_url(key), "trigger_id": trigger_id(),
        }
        if enterprise is not None:
            form |= {"enterprise_id": enterprise, "enterprise_name": f"Org {enterprise}"}
        return urllib.parse.urlencode(form)

    async def command(self, text: str, **kw: Any) -> tuple[int, str]:
        return await self.post(self.command_body(text, **kw),
                               "application/x-www-form-urlencoded")

    def event_body(self, event: dict[str, Any], *, team: str = TEAM,
                   event_id: str | None = None, enterprise: str | None = None,
                   org_install: bool = False) -> str:
        # The Events API wrapper as in tests/fixtures/slack/event_message_thread_reply.json
        # (bolt-python's scenario tests): enterprise_id beside team_id in a Grid org, one
        # installation in `authorizations` (team_id null for an org-wide install),
        # event_context, is_ext_shared_channel.
        self._events += 1
        body: dict[str, Any] = {
            "token": "legacy", "team_id": team, "api_app_id": "A0AVATAR", "event": event,
            "type": "event_callback", "event_id": event_id or f"Ev{self._events:04d}",
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": enterprise,
                                "team_id": None if org_install else team, "user_id": "UBOT",
                                "is_bot": True, "is_enterprise_install": org_install}],
            "is_ext_shared_channel": False, "event_context": f"4-{self._events}",
        }
        if enterprise is not None:
            body["enterprise_id"] = enterprise
        return dumps(body)

    async def event(self, event: dict[str, Any], *, retry: int | None = None,
                    **kw: Any) -> tuple[int, str]:
        body = self.event_body(event, **kw)
        headers = sign(body)
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post(body, "application/json", headers=headers)

    async def thread_message(self, text: str, thread_ts: str, *, user: str = "U1",
                             channel: str = CHANNEL, **kw: Any) -> tuple[int, str]:
        ts = f"{time.time():.6f}"
        return await self.event({
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "thread_ts": thread_ts, "channel_type": "channel", "event_ts": ts,
        }, **kw)

    async def action(self, action_id: str, value: str, *, user: str = "U1", team: str = TEAM,
                     channel: str = CHANNEL, message_ts: str = "1.0",
                     enterprise: str | None = None, org_install: bool = False) -> tuple[int, str]:
        # block_actions as https://api.slack.com/reference/interaction-payloads/block-actions
        # shows it; a Grid org adds `enterprise` ({id, name}) and `is_enterprise_install`, and
        # for an org-wide install `team` is null (slack-bolt then reads `user.team_id`).
        payload = {
            "type": "block_actions",
            "team": None if org_install else {"id": team, "domain": "one"},
            "enterprise": {"id": enterprise, "name": f"Org {enterprise}"} if enterprise else None,
            "is_enterprise_install": org_install,
            "user": {"id": user, "username": user.lower(), "team_id": team},
            "api_app_id": "A0AVATAR", "token": "legacy", "trigger_id": trigger_id(),
            "channel": {"id": channel, "name": "general"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "message": {"ts": message_ts, "type": "message"},
            "response_url": self.fake.response_url("action"),
            "actions": [{"action_id": action_id, "block_id": "b", "value": value,
                         "type": "button", "action_ts": "1.1"}],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self.post(body, "application/x-www-form-urlencoded")


@pytest.fixture
async def make_slack(fake_slack, stack):
    made: list[tuple[SlackHarness, web.AppRunner]] = []
    relays = contextlib.AsyncExitStack()

    async def make(*, min_interval_s: float = 0.01, **overrides: Any) -> SlackHarness:
        values: dict[str, Any] = {
            "slack_signing_secret": SECRET, "slack_bot_token": TOKEN,
            "slack_api_url": fake_slack.api_url, "public_url": "http://viewer.test",
        }
        settings = Settings(_env_file=None, **(values | overrides))
        adapter = build_slack(settings=settings, service=stack.service, tenants=stack.tenants,
                              bindings=stack.bindings, links=stack.links, installs=stack.installs,
                              min_interval_s=min_interval_s)
        web_app = web.Application()
        mount_slack(web_app, adapter)
        # As the composition root does: the relay runs for as long as the app serves.
        await relays.enter_async_context(adapter.relay)
        runner, port = await serve_local(web_app)
        harness = SlackHarness(fake_slack, stack, f"http://127.0.0.1:{port}", adapter)
        harness.settings = settings
        made.append((harness, runner))
        return harness

    yield make
    for harness, runner in made:
        await harness.http.close()
        await runner.cleanup()
    await relays.aclose()


@pytest.fixture
async def slack(make_slack):
    return await make_slack()
