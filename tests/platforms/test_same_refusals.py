"""The same refused start reads the same on Discord and on Slack.

Both platforms are the real adapters: discord.py against the fake Discord (REST + gateway) and
slack-bolt behind signed HTTP requests with the fake Slack Web API, each on its own real SQLite
file. The start rules live once, in ``bot.core.rules.check_start``; Discord applies them early
(its 3-second deadline) and the store again when reserving, so a drift between the two copies
would show here as different wording.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import discord
import pytest
from aiohttp import web

from bot.core.events import EventHub
from bot.core.links import ViewerLinks
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.slack import build_slack, mount_slack
from bot.settings import Settings
from bot.storage.sqlite import SqliteStore
from tests.discord.conftest import Stack as DiscordStack
from tests.discord.conftest import final_text, make_settings, run_bot
from tests.fakes.discord import MEMBER_PERMS, FakeDiscord
from tests.fakes.provider import FakeProvider
from tests.fakes.serve import serve_local
from tests.fakes.slack import FakeSlack
from tests.slack.conftest import CHANNEL, SECRET, TEAM, TOKEN, SlackHarness
from tests.slack.conftest import Stack as SlackStack

DISCORD_TENANT = "discord:111"  # the fake's guild
SLACK_TENANT = f"slack:{TEAM}"
# The marks each platform puts before an error (Discord: one warning sign; Slack: an emoji
# code per error kind, see bot/platforms/slack/errors.py); the sentence after them must match.
_DISCORD_MARK = "⚠️ "
_SLACK_MARK = re.compile(r"^:[a-z_]+: ")

Setup = Callable[[SqliteStore, str, dict[str, str]], Awaitable[None]]


class Sides:
    """A running Discord bot and a running Slack app, and how to start a session on each."""

    def __init__(self, fake: FakeDiscord, dstack: DiscordStack, slack: SlackHarness,
                 sstore: SqliteStore) -> None:
        self.fake, self.dstack, self.slack, self.sstore = fake, dstack, slack, sstore
        self.alice = fake.add_member(fake.user("alice"), [], MEMBER_PERMS)

    async def discord_start(self, minutes: int) -> str:
        text = await final_text(self.fake, await self.fake.slash(self.alice, "start",
                                                                  minutes=minutes))
        assert text.startswith(_DISCORD_MARK), text
        return text.removeprefix(_DISCORD_MARK)

    async def slack_start(self, minutes: int) -> str:
        before = len(self.slack.fake.responses)
        status, _ = await self.slack.command(f"start {minutes}", user="U1")
        assert status == 200
        answer = (await self.slack.fake.wait_for_response(before + 1))[before]
        assert answer["response_type"] == "ephemeral"
        assert _SLACK_MARK.match(answer["text"]), answer["text"]
        return _SLACK_MARK.sub("", answer["text"], count=1)


@contextlib.asynccontextmanager
async def both_platforms(tmp_path: Path) -> AsyncIterator[Sides]:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with contextlib.AsyncExitStack() as stack:
        # Discord: the same stack and bot as tests/discord use.
        fake = await FakeDiscord().start()
        stack.push_async_callback(fake.close)
        dstack = await DiscordStack(tmp_path / "discord.db").open()
        stack.push_async_callback(dstack.close)
        settings_d = make_settings(fake, tmp_path, database_path=tmp_path / "discord.db")
        bot = await run_bot(fake, dstack, settings_d)
        stack.push_async_callback(bot.close)
        # Slack: the same app as tests/slack use (one workspace, SLACK_BOT_TOKEN).
        fake_slack = await FakeSlack().start()
        stack.push_async_callback(fake_slack.close)
        fake_slack.add_workspace(TEAM, TOKEN, channels=(CHANNEL,))
        fake_slack.add_user("U1")
        sstore = await SqliteStore.open(tmp_path / "slack.db")
        stack.push_async_callback(sstore.close)
        hub = EventHub()
        provider = FakeProvider(hub)
        service = SessionService(store=sstore, providers={"fake": provider}, events=hub)
        links = ViewerLinks(b"link-secret-for-tests-0123456789", "http://viewer.test")
        settings = Settings(_env_file=None, slack_signing_secret=SECRET,  # type: ignore[call-arg]
                            slack_bot_token=TOKEN, slack_api_url=fake_slack.api_url,
                            public_url="http://viewer.test")
        adapter = build_slack(settings=settings, service=service, tenants=TenantService(sstore),
                              bindings=ChatBindings(sstore), links=links, min_interval_s=0.01)
        web_app = web.Application()
        mount_slack(web_app, adapter)
        await stack.enter_async_context(adapter.relay)
        runner, port = await serve_local(web_app)
        stack.push_async_callback(runner.cleanup)
        harness = SlackHarness(fake_slack, SlackStack(sstore, hub, provider, service,
                                                      links), f"http://127.0.0.1:{port}", adapter)
        stack.push_async_callback(harness.http.close)
        # One request first: a single-workspace app activates its workspace when its token
        # first answers auth.test, as a real install does.
        status, _ = await harness.command("help")
        assert status == 200
        try:
            yield Sides(fake, dstack, harness, sstore)
        finally:
            discord.http.Route.BASE = base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


async def _no_credits(store: SqliteStore, tenant: str, who: dict[str, str]) -> None:
    await store.ensure_tenant(tenant)


async def _too_long(store: SqliteStore, tenant: str, who: dict[str, str]) -> None:
    await store.grant(tenant, 100, "test")
    await store.set_limits(tenant, max_minutes=3)


async def _daily_cap(store: SqliteStore, tenant: str, who: dict[str, str]) -> None:
    await store.grant(tenant, 100, "test")
    await store.set_limits(tenant, daily_user_credits=2)


async def _none_concurrent(store: SqliteStore, tenant: str, who: dict[str, str]) -> None:
    await store.grant(tenant, 100, "test")
    await store.set_limits(tenant, max_concurrent=0)


async def _not_allowed(store: SqliteStore, tenant: str, who: dict[str, str]) -> None:
    await store.grant(tenant, 100, "test")
    # Someone else is on the list (a Discord role or a Slack person): the starter is not.
    await store.set_limits(tenant, **{who["list"]: [who["other"]]})


async def _removed(store: SqliteStore, tenant: str, who: dict[str, str]) -> None:
    await store.grant(tenant, 100, "test")
    await store.set_tenant_active(tenant, False)


CASES: dict[str, tuple[Setup, str]] = {
    "insufficient credits": (_no_credits, "Not enough credits: this needs 5, 0 available."),
    "longer than allowed": (_too_long, "Sessions here last at most 3 minutes."),
    "over the daily cap": (_daily_cap, "Your daily limit is 2 credits;"),
    "over the concurrent limit": (_none_concurrent, "already running here (limit 0)"),
    "not allowed": (_not_allowed, "You are not among the roles or people allowed"),
    "bot removed": (_removed, "The bot was removed from this server or workspace"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_refused_start_reads_the_same_on_discord_and_slack(
    tmp_path: Path, case: str
) -> None:
    setup, expected = CASES[case]
    async with both_platforms(tmp_path) as sides:
        staff = await sides.fake.add_role("staff")
        await setup(sides.dstack.store, DISCORD_TENANT, {"list": "allowed_roles", "other": staff})
        await setup(sides.sstore, SLACK_TENANT, {"list": "allowed_users", "other": "U9"})
        on_discord = await sides.discord_start(5)
        on_slack = await sides.slack_start(5)
        assert expected in on_discord
        assert on_discord == on_slack
        # A refusal reserves nothing on either side.
        for store in (sides.dstack.store, sides.sstore):
            assert await store.open_sessions() == []
            assert await store.verify() == []
