"""The other /avatar commands, autocomplete, admin commands, and `discord sync`."""

from __future__ import annotations

from pathlib import Path

from bot.core.models import SessionState, limit_bounds
from bot.platforms.discord import build_discord_client
from bot.platforms.discord.sync import sync_commands
from tests.discord.conftest import (
    TENANT,
    TOKEN,
    Bot,
    Stack,
    callback,
    final_text,
    is_ephemeral,
    make_settings,
)
from tests.discord.test_session_flow import start_session
from tests.fakes.discord import FakeDiscord


async def test_autocomplete_lists_matching_avatars_and_providers(
    fake: FakeDiscord, bot: Bot, alice: dict
) -> None:
    body = await callback(await fake.autocomplete(alice, "start", "avatar", avatar="bo"))
    assert body == {"type": 8, "data": {"choices": [{"name": "Bob (fake)", "value": "fake:bob-2"}]}}
    body = await callback(await fake.autocomplete(alice, "start", "provider", provider=""))
    assert body["data"]["choices"] == [{"name": "Fake", "value": "fake"}]


async def test_commands_inside_the_thread(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    _, _, thread = await start_session(fake, alice, minutes=5, mode="say")
    tid = thread["id"]
    (record,) = await stack.service.open_sessions(TENANT)
    assert record.mode.value == "say"
    nested = await callback(await fake.slash(alice, "start", channel_id=tid))
    assert is_ephemeral(nested) and "in a text channel" in nested["data"]["content"]
    assert len(stack.provider.called("start")) == 1

    reply = await final_text(fake, await fake.slash(alice, "ask", channel_id=tid, text="why?"))
    assert reply == "Sent to Ava (ask)."
    await fake.wait_for(lambda: [m for m in fake.channel_messages(tid)
                                 if "You asked: why?" in m["content"]])

    pending = await fake.slash(alice, "mode", channel_id=tid, mode="ask")
    assert "now make Ava ask" in await final_text(fake, pending)
    await fake.user_message(alice, tid, "plain message")
    await fake.wait_for(lambda: "plain message" in stack.provider.called("ask"))

    assert "Ava stopped talking" in await final_text(
        fake, await fake.slash(alice, "interrupt", channel_id=tid))
    assert stack.provider.called("interrupt")

    pending = await fake.slash(alice, "link", channel_id=tid)
    body = await callback(pending)
    assert is_ephemeral(body) and "http://viewer.test/v/" in body["data"]["content"]
    token = body["data"]["content"].rsplit("/v/", 1)[1]
    assert stack.links.verify(token).session_id == record.id

    credits = await final_text(fake, await fake.slash(alice, "credits"))
    assert "**95** credits available (5 reserved" in credits
    assert "You used 5 of your 500 daily credits today" in credits

    avatars = await final_text(fake, await fake.slash(alice, "avatars"))
    assert "`fake:ava-1` Ava" in avatars and "`fake:bob-2` Bob" in avatars

    # /avatar stop from the main channel finds the one running session there
    assert "Stopped Ava" in await final_text(fake, await fake.slash(alice, "stop"))
    assert (await stack.service.get(record.id)).state is SessionState.ENDED
    # a message in the ended session's thread gets a short explanation
    late = await fake.user_message(alice, tid, "hello?")
    reply = await fake.wait_for(lambda: [m for m in fake.channel_messages(tid)
                                         if m["content"].startswith("⚠️")
                                         and "not live" in m["content"]
                                         and not m["flags"] & 64])
    assert reply and not late["reactions"]
    assert await stack.store.verify() == []


async def test_admin_commands(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict, admin: dict
) -> None:
    # Issue 16: a server admin does not mint credits; the operator (OPERATOR_USER_IDS) does.
    reply = await final_text(fake, await fake.slash(admin, "grant", group="admin", amount=40))
    assert "Only the bot's operator grants credits" in reply
    assert not await stack.store.tenant_exists(TENANT) or (
        await stack.store.balance(TENANT)).granted == 0
    reply = await final_text(fake, await fake.slash(admin, "limits", group="admin",
                                                     max_concurrent=50))
    assert "max_concurrent goes from 0 to 5 here (the ceiling the bot's operator set)" in reply
    bot.client.settings.operator_user_ids = [f"discord:{admin['user']['id']}"]
    reply = await final_text(fake, await fake.slash(admin, "grant", group="admin", amount=40))
    assert reply == "Granted 40 credits; 40 available now."
    assert (await stack.store.balance(TENANT)).granted == 40
    bot.client.settings.operator_user_ids = []

    reply = await final_text(fake, await fake.slash(admin, "limits", group="admin",
                                                     max_concurrent=1, max_minutes=20))
    assert "1 sessions at once, 20 min each" in reply and "who may start: everyone" in reply

    staff = await fake.add_role("staff")
    role = next(r for r in fake.roles if r["id"] == staff)
    pending = await fake.slash(admin, "allow-role", group="admin", role=(8, staff),
                               resolved={"roles": {staff: role}})
    assert f"<@&{staff}>" in await final_text(fake, pending)
    assert (await stack.store.get_limits(TENANT)).allowed_roles == [staff]

    refused = await fake.slash(alice, "start")
    assert "not among the roles" in (await callback(refused))["data"]["content"]
    carol = fake.add_member(fake.user("carol"), [staff])
    await start_session(fake, carol, minutes=2)

    listing = await final_text(fake, await fake.slash(admin, "sessions", group="admin"))
    assert "Ava (fake, live)" in listing and f"<@{carol['user']['id']}>" in listing

    pending = await fake.slash(admin, "deny-role", group="admin", role=(8, staff),
                               resolved={"roles": {staff: role}})
    assert "everyone" in await final_text(fake, pending)
    assert (await stack.store.get_limits(TENANT)).allowed_roles == []

    shown = await final_text(fake, await fake.slash(admin, "default-avatar", group="admin"))
    assert "starts **Ava**" in shown
    refused = await fake.slash(alice, "default-avatar", group="admin", avatar="Bob")
    assert "Manage Server" in (await callback(refused))["data"]["content"]
    chosen = await fake.slash(admin, "default-avatar", group="admin", avatar="Bob")
    assert "now starts **Bob**" in await final_text(fake, chosen)
    assert await stack.store.default_avatar(TENANT) == "fake:bob-2"


async def test_sync_registers_the_avatar_group(fake: FakeDiscord, tmp_path: Path) -> None:
    settings = make_settings(fake, tmp_path)
    names = await sync_commands(settings, 111)
    assert "avatar start" in names and "avatar admin grant" in names and len(names) == 15
    assert "avatar admin default-avatar" in names
    (avatar,) = fake.commands["111"]
    assert avatar["name"] == "avatar"
    subs = {o["name"]: o for o in avatar["options"]}
    start_opts = {o["name"]: o for o in subs["start"]["options"]}
    assert start_opts["avatar"]["autocomplete"] and start_opts["minutes"]["max_value"] == 240
    assert {c["value"] for c in start_opts["mode"]["choices"]} == {"ask", "say"}
    assert {o["name"] for o in subs["admin"]["options"]} == {
        "grant", "limits", "allow-role", "deny-role", "default-avatar", "sessions"}
    # The limit options' ranges are the ones Limits carries (and Slack's admin command checks).
    admin_subs = {o["name"]: o for o in subs["admin"]["options"]}
    limit_opts = {o["name"]: o for o in admin_subs["limits"]["options"]}
    assert {k: (o["min_value"], o["max_value"]) for k, o in limit_opts.items()} == {
        "max_concurrent": (0, 50), "max_minutes": (1, 240), "daily_user_credits": (0, 1_000_000)}
    assert {k: limit_bounds(k) for k in limit_opts} == {
        k: (o["min_value"], o["max_value"]) for k, o in limit_opts.items()}
    say_text = {o["name"]: o for o in subs["say"]["options"]}["text"]
    assert say_text["max_length"] == 2000  # Discord's own message limit, every provider's default
    # without --guild and without DISCORD_GUILD_IDS: a global sync
    await sync_commands(settings, None)
    (avatar,) = fake.commands["global"]
    assert avatar["name"] == "avatar" and avatar["contexts"] == [0]  # guild-only
    # the token went out only as the Authorization header, never in a URL
    assert all(TOKEN not in c.path for c in fake.calls)


async def test_client_requests_the_intents_it_needs(stack: Stack) -> None:
    from bot.settings import Settings

    settings = Settings(_env_file=None, discord_token="x")  # type: ignore[call-arg]
    client = build_discord_client(settings=settings, service=stack.service, tenants=stack.tenants,
                                  bindings=stack.bindings, links=stack.links)
    intents = client.intents
    assert intents.guilds and intents.guild_messages and intents.message_content
    assert not intents.members and not intents.presences
    await client.close()


async def test_link_and_say_without_an_id_reach_only_this_channels_session(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    # Issue 16: the server's only session, started in another (maybe private) channel, is not
    # reachable from here.
    await stack.store.grant(TENANT, 100, "test")
    await start_session(fake, alice, avatar="fake:ava-1", minutes=5)
    other = fake.snowflake()
    fake.channels[other] = {
        "id": other, "type": 0, "guild_id": fake.guild_id, "name": "elsewhere", "position": 1,
        "permission_overwrites": [], "nsfw": False, "parent_id": None,
    }
    for sub, options in (("link", {}), ("say", {"text": "hello from elsewhere"})):
        reply = await final_text(fake, await fake.slash(alice, sub, channel_id=other, **options))
        assert "No avatar session is running here" in reply, sub
    assert stack.provider.called("say") == []
    # in the session's own channel both still work
    pending = await fake.slash(alice, "link")
    assert "http://viewer.test/v/" in (await callback(pending))["data"]["content"]
