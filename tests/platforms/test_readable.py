"""What the avatar hears from Slack and Discord messages, fed with published payloads.

The payloads are in tests/fixtures (sources in tests/fixtures/README.md). Each test reads the text
field the adapter would read and checks what a person reading the thread would say out loud.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from bot.platforms.readable import (
    Resolver,
    discord_forwardable,
    discord_readable,
    slack_forwardable,
    slack_readable,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = datetime(2025, 4, 20, 12, 0, tzinfo=UTC)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def names(table: dict[str, str]) -> Resolver:
    return table.get


# Look-ups as the adapters would answer them (users.info / members / roles / channels).
SLACK_USERS = names({"W0ABCDEF12": "John Smith", "W013QGS7BPF": "Grace"})
SLACK_CHANNELS = names({"C024BE7LR": "general"})
DISCORD_USERS = names({"80351110224678912": "Nelly"})
DISCORD_ROLES = names({"165511591545143296": "Mods"})
DISCORD_CHANNELS = names({"103735883630395392": "big-news"})


def nobody(_: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# Slack
# ---------------------------------------------------------------------------------------------


def slash_text(name: str) -> str:
    body = (FIXTURES / name).read_text(encoding="utf-8")
    return parse_qs(body, keep_blank_values=True, strict_parsing=True)["text"][0]


def test_escaped_slash_command_text_reads_as_typed() -> None:
    text = slash_text("slack/slash_command_say_escaped.form")
    # The fixture is escaped as Slack sends it.
    assert "&amp;" in text and "<@W0ABCDEF12|john>" in text
    spoken = slack_readable(text.removeprefix("say "))
    assert spoken == "Hi john & welcome to #general everyone here read the guide <3"


def test_slash_command_mention_prefers_the_looked_up_name() -> None:
    text = slash_text("slack/slash_command_say_escaped.form").removeprefix("say ")
    spoken = slack_readable(text, SLACK_USERS, SLACK_CHANNELS)
    assert spoken.startswith("Hi John Smith & welcome to #general")


def test_thread_reply_with_unknown_user_says_someone_not_the_id() -> None:
    event = load("slack/event_message_thread_reply.json")["event"]
    assert event["thread_ts"] != event["ts"]
    spoken = slack_readable(event["text"], nobody, nobody)
    assert spoken == "Hi someone & welcome to #general! wave see the guide or example.org"
    assert "W0ABCDEF12" not in spoken and "<" not in spoken
    assert slack_forwardable(event.get("subtype"), bool(spoken)) == "forward"


def test_thread_reply_with_known_names() -> None:
    event = load("slack/event_message_thread_reply.json")["event"]
    spoken = slack_readable(event["text"], SLACK_USERS, SLACK_CHANNELS, emoji=False)
    assert spoken == "Hi John Smith & welcome to #general! see the guide or example.org"


def test_thread_broadcast_is_a_person_talking() -> None:
    event = load("slack/event_message_thread_broadcast.json")["event"]
    spoken = slack_readable(event["text"])
    assert (spoken, slack_forwardable(event["subtype"], bool(spoken))) == ("Hi there!", "forward")


@pytest.mark.parametrize(
    "name", ["slack/event_message_image_only.json", "slack/event_message_file_share_only.json"]
)
def test_upload_without_words_gets_a_note_not_a_question(name: str) -> None:
    event = load(name)["event"]
    spoken = slack_readable(event["text"])
    assert spoken == ""
    verdict = slack_forwardable(event["subtype"], bool(spoken), has_files=bool(event["files"]))
    assert verdict == "note"


def test_upload_with_a_comment_forwards_the_comment() -> None:
    event = load("slack/event_message_image_only.json")["event"]
    event["text"] = "What is in *this* picture?"
    spoken = slack_readable(event["text"])
    assert spoken == "What is in this picture?"
    assert slack_forwardable(event["subtype"], True, has_files=True) == "forward"


def test_bot_messages_are_ignored_even_with_text() -> None:
    event = load("slack/event_message_bot.json")["event"]
    spoken = slack_readable(event["text"])
    assert spoken == "Here's a message for you"
    verdict = slack_forwardable(event.get("subtype"), bool(spoken), is_bot="bot_id" in event)
    assert verdict == "ignore"


@pytest.mark.parametrize(
    "subtype",
    ["message_changed", "message_deleted", "channel_join", "channel_topic", "bot_message"],
)
def test_other_subtypes_are_ignored(subtype: str) -> None:
    assert slack_forwardable(subtype, True, has_files=True) == "ignore"


def test_slack_connect_message_reads_the_sender_name() -> None:
    body = load("slack/event_message_slack_connect.json")
    assert body["is_ext_shared_channel"] is True
    event = body["event"]
    assert slack_readable(event["text"], SLACK_USERS) == "Can the avatar say hello to Grace?"
    assert slack_readable(event["text"], nobody) == "Can the avatar say hello to someone?"


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("*bold _and italic_ here*", "bold and italic here"),
        ("keep file_name_here and 2*3*4 as typed", "keep file_name_here and 2*3*4 as typed"),
        ("&amp;lt;b&amp;gt; is how you write &lt;b&gt;", "&lt;b&gt; is how you write <b>"),
        ("&gt; quoted\nreply", "quoted\nreply"),
        ("<!channel> <!everyone>", "everyone in the channel everyone"),
        ("<!subteam^SAZ94GDB8|@design> please", "design please"),
        ("<!date^1392734382^{date_num}|Posted 2014-02-18> ok", "Posted 2014-02-18 ok"),
        ("mail <mailto:bob@example.com|bob@example.com>", "mail bob@example.com"),
        ("<mailto:ann@example.com>", "ann@example.com"),
        ("<https://www.example.com/a_b_c>", "example.com"),
        ("<#C999> and <@U999> and <@U998|>", "a channel and someone and someone"),
        (":+1: :thumbsup::skin-tone-3: :white_check_mark:", "+1 thumbsup white check mark"),
        ("at 10:30:45 sharp", "at 10:30:45 sharp"),
        ("```<@U1> stays\n```", "<@U1> stays"),
        ("`x_y_z` and ~gone~", "x_y_z and gone"),
    ],
)
def test_slack_odd_shapes(text: str, spoken: str) -> None:
    assert slack_readable(text, nobody, nobody) == spoken


def test_slack_resolver_answering_blank_falls_back_to_a_neutral_word() -> None:
    assert slack_readable("ping <@U1>", names({"U1": "  "})) == "ping someone"


@pytest.mark.parametrize("text", [None, "", "   ", "```\n```", ":wave:"])
def test_slack_nothing_to_say(text: str | None) -> None:
    spoken = slack_readable(text, emoji=False)
    assert spoken == ""
    assert slack_forwardable(None, bool(spoken)) == "ignore"


# ---------------------------------------------------------------------------------------------
# Discord
# ---------------------------------------------------------------------------------------------


def message(name: str) -> dict[str, Any]:
    envelope = load(f"discord/{name}")
    assert envelope["op"] == 0 and envelope["t"] == "MESSAGE_CREATE"
    return envelope["d"]


def verdict(d: dict[str, Any]) -> str:
    """What the adapter would decide for this MESSAGE_CREATE payload."""
    spoken = discord_readable(d["content"], nobody, nobody, nobody, now=NOW)
    reference = d.get("message_reference") or {}
    return discord_forwardable(
        d["type"],
        bool(spoken),
        has_attachments=bool(d["attachments"]),
        has_stickers=bool(d.get("sticker_items")),
        is_forward=reference.get("type") == 1 and bool(d.get("message_snapshots")),
    )


def test_default_message_reads_like_the_client_shows_it() -> None:
    d = message("message_create_default.json")
    spoken = discord_readable(d["content"], DISCORD_USERS, DISCORD_ROLES, DISCORD_CHANNELS, now=NOW)
    assert spoken == (
        "Hey Nelly and Nelly, ask Mods in #big-news mmLol b1nzy starts 4 years ago. "
        "Bold under it also gone secret code the docs example.com\n"
        "quoted line\nHeading\nprint('hi')"
    )
    assert verdict(d) == "forward"


def test_default_message_with_unknown_ids_never_speaks_an_id() -> None:
    d = message("message_create_default.json")
    spoken = discord_readable(d["content"], nobody, nobody, nobody, now=NOW)
    assert spoken.startswith("Hey someone and someone, ask a role in a channel ")
    assert not re.search(r"\d{15,}", spoken) and "<" not in spoken


def test_reply_is_forwarded_without_markup() -> None:
    d = message("message_create_reply.json")
    assert discord_readable(d["content"]) == "What does that mean?"
    assert verdict(d) == "forward"


@pytest.mark.parametrize(
    "name",
    [
        "message_create_channel_name_change.json",  # content is the new name: not a question
        "message_create_pinned.json",
        "message_create_user_join.json",
        "message_create_recipient_add.json",
        "message_create_thread_created.json",  # content is the thread name
        "message_create_thread_starter.json",
    ],
)
def test_system_messages_reach_nothing(name: str) -> None:
    d = message(name)
    assert d["type"] not in (0, 19)
    assert verdict(d) == "ignore"


def test_rename_is_ignored_although_it_has_text() -> None:
    d = message("message_create_channel_name_change.json")
    assert discord_readable(d["content"]) == "Ada — renamed session"
    assert verdict(d) == "ignore"


@pytest.mark.parametrize(
    "name",
    [
        "message_create_attachment_only.json",
        "message_create_sticker_only.json",
        "message_create_forward.json",
    ],
)
def test_wordless_messages_get_a_reaction(name: str) -> None:
    d = message(name)
    assert discord_readable(d["content"]) == ""
    assert verdict(d) == "react"


def test_forward_snapshot_text_is_readable_for_whoever_wants_it() -> None:
    snapshot = message("message_create_forward.json")["message_snapshots"][0]["message"]
    assert discord_readable(snapshot["content"], nobody, nobody, DISCORD_CHANNELS) == (
        "Have you seen #big-news?"
    )


@pytest.mark.parametrize(
    ("token", "spoken"),
    [
        ("<t:1618953630>", "20 April 2021 at 21:20 UTC"),
        ("<t:1618953630:f>", "20 April 2021 at 21:20 UTC"),
        ("<t:1618953630:F>", "Tuesday 20 April 2021 at 21:20 UTC"),
        ("<t:1618953630:d>", "20 April 2021"),
        ("<t:1618953630:D>", "20 April 2021"),
        ("<t:1618953630:t>", "21:20 UTC"),
        ("<t:1618953630:R>", "4 years ago"),
        ("<t:1745323200:R>", "in 2 days"),
        ("<t:1745150430:R>", "just now"),
        ("<t:99999999999999999999:R>", "some time"),
    ],
)
def test_discord_timestamps(token: str, spoken: str) -> None:
    assert discord_readable(token, now=NOW) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("**bold _and italic_ inside**", "bold and italic inside"),
        ("||**hidden bold**||", "hidden bold"),
        ("***both***", "both"),
        (r"\*not italic\* and \_\_kept\_\_", "*not italic* and __kept__"),
        ("snake_case_name and 2 * 3 * 4", "snake_case_name and 2 * 3 * 4"),
        ("[**the** label](https://example.com/x_y_z)", "the label"),
        ("see https://www.example.com/a_b_c.", "see example.com."),
        ("<https://example.org/quiet>", "example.org"),
        ("## Title\n-# small print\n- item", "Title\nsmall print\nitem"),
        (">>> a quote\nthat goes on", "a quote\nthat goes on"),
        ("run </avatar start:1234567890>", "run /avatar start"),
        ("open <id:browse>", "open a server page"),
        ("<:party_parrot:456> <a:dance:789>", "party parrot dance"),
        ("```\n```", ""),
        ("   ", ""),
    ],
)
def test_discord_odd_shapes(text: str, spoken: str) -> None:
    assert discord_readable(text, nobody, nobody, nobody, now=NOW) == spoken


def test_discord_empty_default_message_is_ignored_quietly() -> None:
    assert discord_forwardable(0, False) == "ignore"
    assert discord_forwardable(19, bool(discord_readable("```\n```"))) == "ignore"


# Every value of message.mdx "Message Types" except DEFAULT (0) and REPLY (19).
SYSTEM_TYPES = [*range(1, 13), *range(14, 19), *range(20, 30), 31, 32, 36, 37, 38, 39, 44, 46]


@pytest.mark.parametrize("message_type", SYSTEM_TYPES)
def test_every_system_type_is_ignored_whatever_it_carries(message_type: int) -> None:
    got = discord_forwardable(
        message_type, True, has_attachments=True, has_stickers=True, is_forward=True
    )
    assert got == "ignore"


# ---------------------------------------------------------------------------------------------
# The fixtures themselves: every file is documented with its source, and the published shapes the
# code has to cope with are really in them.
# ---------------------------------------------------------------------------------------------


def test_every_fixture_names_its_source() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in FIXTURES.glob("*/*") if p.suffix in (".json", ".form"))
    assert files, "no fixtures found"
    undocumented = [name for name in files if f"`{name}`" not in readme]
    assert undocumented == []


def test_install_shapes_differ_where_the_token_lookup_depends_on_them() -> None:
    workspace = load("slack/oauth_v2_access_workspace.json")
    grid = load("slack/oauth_v2_access_grid_workspace.json")
    org = load("slack/oauth_v2_access_org_install.json")
    assert workspace["enterprise"] is None and workspace["team"]["id"]
    assert grid["enterprise"]["id"] and grid["team"]["id"]
    assert org["is_enterprise_install"] is True and org["team"] is None


def test_unpaired_marks_in_a_long_message_are_left_as_typed() -> None:
    # Slack allows 40,000 characters; unpaired marks must neither vanish nor stall the relay.
    text = " *a" * 13_000
    assert slack_readable(text) == text.strip()
    assert discord_readable(text[:4000]) == text[:4000].strip()
