"""Refusals: each an ephemeral answer inside the deadline, nothing reserved, nothing posted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.discord.conftest import TENANT, Bot, Stack, callback, is_ephemeral
from tests.fakes.discord import BOT_PERMS, CREATE_PUBLIC_THREADS, FakeDiscord


async def refused(fake: FakeDiscord, stack: Stack, pending: Any) -> str:
    body = await callback(pending)
    assert body["type"] == 4 and is_ephemeral(body)
    assert stack.provider.called("start") == []
    assert await stack.store.open_sessions() == []
    assert (await stack.store.balance(TENANT)).pending == 0
    assert fake.threads() == []
    assert [m for m in fake.channel_messages(fake.channel_id) if not m["flags"] & 64] == []
    assert await stack.store.verify() == []
    return body["data"]["content"]


async def test_no_credits(fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict) -> None:
    text = await refused(fake, stack, await fake.slash(alice, "start", minutes=5))
    assert "Not enough credits: this needs 5, 0 available" in text


async def test_limit_reached(fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict) -> None:
    await stack.store.grant(TENANT, 100, "test")
    await stack.store.set_limits(TENANT, max_minutes=3)
    text = await refused(fake, stack, await fake.slash(alice, "start", minutes=5))
    assert "at most 3 minutes" in text


async def test_daily_cap(fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict) -> None:
    await stack.store.grant(TENANT, 100, "test")
    await stack.store.set_limits(TENANT, daily_user_credits=2)
    text = await refused(fake, stack, await fake.slash(alice, "start", minutes=5))
    assert "daily limit is 2 credits" in text


async def test_role_not_allowed(fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict) -> None:
    await stack.store.grant(TENANT, 100, "test")
    staff = await fake.add_role("staff")
    await stack.store.set_limits(TENANT, allowed_roles=[staff])
    text = await refused(fake, stack, await fake.slash(alice, "start"))
    assert "not among the roles" in text


async def test_bot_lacks_thread_permission(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    pending = await fake.slash(alice, "start", app_perms=BOT_PERMS & ~CREATE_PUBLIC_THREADS)
    text = await refused(fake, stack, pending)
    assert "Create Public Threads" in text and "Send Messages" not in text.split(":")[1]


async def test_unknown_avatar(fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict) -> None:
    await stack.store.grant(TENANT, 100, "test")
    text = await refused(fake, stack, await fake.slash(alice, "start", avatar="nobody"))
    assert "Unknown avatar 'nobody'" in text and "/avatar avatars" in text


@pytest.mark.parametrize(("sub", "options"), [
    ("grant", {"amount": 50}),
    ("limits", {"max_concurrent": 9}),
    ("sessions", {}),
])
async def test_admin_command_by_non_admin(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict, sub: str, options: dict
) -> None:
    await stack.store.grant(TENANT, 10, "test")
    text = await refused(fake, stack, await fake.slash(alice, sub, group="admin", **options))
    assert "Manage Server" in text
    assert (await stack.store.balance(TENANT)).granted == 10
    assert (await stack.store.get_limits(TENANT)).max_concurrent == 2


async def test_stop_by_someone_else(fake: FakeDiscord, stack: Stack, bot: Bot,
                                    alice: dict) -> None:
    from tests.discord.test_session_flow import start_session

    await stack.store.grant(TENANT, 100, "test")
    _, anchor, _ = await start_session(fake, alice)
    (record,) = await stack.service.open_sessions(TENANT)
    bob = fake.add_member(fake.user("bob"), [])
    click = await fake.click(bob, anchor, f"avatar:stop:{record.id}")
    body = await callback(click)
    assert body["type"] == 4 and is_ephemeral(body)
    assert "Only the person who started this session" in body["data"]["content"]
    assert (await stack.service.get(record.id)).state.value == "live"


async def test_a_slow_avatar_list_still_refuses_before_anything_is_posted(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    """Past the quick checks' time the answer is deferred ("thinking…", only for the caller);
    the refusal then replaces it, and nothing says the session is starting."""
    from tests.discord.conftest import final_text

    await stack.store.grant(TENANT, 100, "test")
    await stack.store.set_limits(TENANT, daily_user_credits=2)
    stack.provider.list_delay = 2.5  # longer than the pre-defer checks may wait
    pending = await fake.slash(alice, "start", minutes=5)
    body = await callback(pending)
    assert body["type"] == 5 and is_ephemeral(body)
    text = await final_text(fake, pending)
    assert "daily limit is 2 credits" in text and "Start" not in text
    assert stack.provider.called("start") == []
    assert fake.threads() == []
    assert [m for m in fake.channel_messages(fake.channel_id) if not m["flags"] & 64] == []
    assert (await stack.store.balance(TENANT)).pending == 0
    assert await stack.store.verify() == []
