"""Discord's own message shapes in a session thread, through the real discord.py client.

The fake gateway replays the published MESSAGE_CREATE payloads of tests/fixtures/discord (see its
README for the source of each): only people's messages and replies reach the avatar, read the way
a person reads them out; system messages reach nothing; a message with nothing to read out gets
the 🔇 reaction and no public reply.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.platforms.discord.threads import ACCEPTED, TEXT_ONLY
from tests.discord.conftest import TENANT, Bot, Stack, callback, final_text
from tests.discord.test_session_flow import start_session
from tests.fakes.discord import FakeDiscord

SYSTEM = [
    "message_create_channel_name_change.json",  # type 4: content is the thread's new name
    "message_create_pinned.json",  # type 6
    "message_create_user_join.json",  # type 7
    "message_create_recipient_add.json",  # type 1: someone added to the thread
    "message_create_thread_created.json",  # type 18
    "message_create_thread_starter.json",  # type 21
]
WORDLESS = [
    "message_create_attachment_only.json",
    "message_create_sticker_only.json",
    "message_create_forward.json",
]


async def session_thread(fake: FakeDiscord, stack: Stack, alice: dict) -> str:
    await stack.store.grant(TENANT, 100, "test")
    _, _, thread = await start_session(fake, alice, minutes=5)
    return str(thread["id"])


def bot_lines(fake: FakeDiscord, tid: str) -> list[str]:
    return [m["content"] for m in fake.channel_messages(tid)
            if m["author"]["id"] == fake.bot_user["id"]]


async def test_system_messages_reach_nothing(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    tid = await session_thread(fake, stack, alice)
    sent = [await fake.fixture_message(name, tid, alice) for name in SYSTEM]
    # A person's message afterwards: once it is answered, every earlier one was handled.
    await fake.user_message(alice, tid, "are you there?")
    await fake.wait_for(lambda: [c for c in bot_lines(fake, tid) if "are you there?" in c])
    assert stack.provider.called("ask") == ["are you there?"]
    assert stack.provider.called("say") == []
    # no reply and no reaction to any of them: the rename's new name never became a question
    assert not [c for c in bot_lines(fake, tid) if "⚠️" in c or "renamed" in c]
    assert [m["reactions"] for m in sent] == [[]] * len(SYSTEM)
    assert fake.calls_to("PUT", r"/reactions/") and all(
        call.path.split("/")[4] not in {m["id"] for m in sent}
        for call in fake.calls_to("PUT", r"/reactions/"))


@pytest.mark.parametrize("name", WORDLESS)
async def test_a_message_with_nothing_to_read_out_gets_a_reaction_only(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict, name: str
) -> None:
    tid = await session_thread(fake, stack, alice)
    before = bot_lines(fake, tid)
    msg = await fake.fixture_message(name, tid, alice)
    await fake.wait_for(lambda: msg["reactions"])
    assert msg["reactions"] == [TEXT_ONLY]
    assert stack.provider.called("ask") == [] and stack.provider.called("say") == []
    assert bot_lines(fake, tid) == before  # no public "nothing to say"


async def test_an_image_with_a_comment_is_forwarded(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    tid = await session_thread(fake, stack, alice)
    msg = await fake.fixture_message("message_create_attachment_only.json", tid, alice,
                                     content="Look at **this** cat")
    await fake.wait_for(lambda: msg["reactions"])
    assert msg["reactions"] == [ACCEPTED]
    assert stack.provider.called("ask") == ["Look at this cat"]


async def test_a_reply_is_forwarded_as_read(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    tid = await session_thread(fake, stack, alice)
    msg = await fake.fixture_message("message_create_reply.json", tid, alice)
    await fake.wait_for(lambda: msg["reactions"])
    assert stack.provider.called("ask") == ["What does that mean?"]


async def test_mentions_emoji_links_and_markdown_reach_the_avatar_as_read(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    tid = await session_thread(fake, stack, alice)
    # The role and channel of the published example exist but are not in discord.py's cache
    # (created while the bot was away): their names come from GET /guilds/{id}/roles and
    # GET /channels/{id}. Nelly is named by the message's own "mentions".
    await fake.add_role("Moderators", rid="165511591545143296", announce=False)
    fake.channels["103735883630395392"] = {
        "id": "103735883630395392", "type": 0, "guild_id": fake.guild_id, "name": "help-desk",
        "position": 1, "permission_overwrites": [], "nsfw": False, "parent_id": None,
    }
    content = ("Hey <@80351110224678912>, ask <@&165511591545143296> in <#103735883630395392> "
               "<:mmLol:216154654256398347> **now** — [the docs](https://discord.com/developers/"
               "docs) or https://example.com/page?x=1")
    msg = await fake.fixture_message("message_create_default.json", tid, alice, content=content)
    await fake.wait_for(lambda: msg["reactions"])
    assert stack.provider.called("ask") == [
        "Hey Nelly, ask Moderators in #help-desk mmLol now — the docs or example.com"
    ]
    assert len(fake.calls_to("GET", r"^/guilds/\d+/roles$")) == 1
    assert len(fake.calls_to("GET", r"^/channels/103735883630395392$")) == 1

    # The same names again: from the cache, no second look-up.
    again = await fake.user_message(alice, tid, "thanks <@&165511591545143296> and "
                                                "<#103735883630395392>")
    await fake.wait_for(lambda: again["reactions"])
    assert stack.provider.called("ask")[-1] == "thanks Moderators and #help-desk"
    assert len(fake.calls_to("GET", r"^/guilds/\d+/roles$")) == 1
    assert len(fake.calls_to("GET", r"^/channels/103735883630395392$")) == 1


async def test_the_published_example_is_read_without_markup(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    tid = await session_thread(fake, stack, alice)
    msg = await fake.fixture_message("message_create_default.json", tid, alice)
    await fake.wait_for(lambda: msg["reactions"])
    (spoken,) = stack.provider.called("ask")
    # Unknown role and channel (the fake has neither): neutral words, never the raw ids.
    assert spoken.startswith("Hey Nelly and Nelly, ask a role in a channel mmLol b1nzy starts ")
    assert "Bold under it also gone secret code the docs example.com" in spoken
    for raw in ("<", "**", "__", "~~", "||", "`", "](", "80351110224678912", "```"):
        assert raw not in spoken, raw


async def test_say_command_text_is_read_with_names(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    tid = await session_thread(fake, stack, alice)
    # Bob joined after the bot connected: not in discord.py's cache, found by REST.
    bob = fake.add_member(fake.user("bob"), [])
    bob["nick"] = "Bobby"
    text = f"Welcome <@{bob['user']['id']}> & __everyone__ <a:wave_hello:392938283556143104>"
    pending = await fake.slash(alice, "say", channel_id=tid, text=text)
    await callback(pending)
    assert "Sent to" in await final_text(fake, pending)
    assert stack.provider.called("say") == ["Welcome Bobby & everyone wave hello"]
    assert len(fake.calls_to("GET", rf"^/guilds/\d+/members/{bob['user']['id']}$")) == 1


async def test_an_unknown_member_is_someone_and_the_miss_is_cached(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    tid = await session_thread(fake, stack, alice)
    for _ in range(2):
        pending = await fake.slash(alice, "ask", channel_id=tid, text="Who is <@999999999999>?")
        await final_text(fake, pending)
    assert stack.provider.called("ask") == ["Who is someone?"] * 2
    assert len(fake.calls_to("GET", r"^/guilds/\d+/members/999999999999$")) == 1


def test_the_name_cache_is_bounded() -> Any:
    from bot.platforms.discord.names import NameCache

    cache = NameCache(max_entries=3, ttl_s=60)
    for i in range(10):
        cache.put("user", 1, i, f"n{i}")
    assert len(cache) == 3
    assert cache.get("user", 1, 0) == (False, None)
    assert cache.get("user", 1, 9) == (True, "n9")
    expired = NameCache(ttl_s=-1)
    expired.put("role", 1, 2, "gone")
    assert expired.get("role", 1, 2) == (False, None)
