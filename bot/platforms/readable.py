"""Chat text as a person reading the thread would read it out, for both platforms.

Slack and Discord deliver message text with markup in it: user, role and channel ids, custom emoji,
timestamps, links and formatting marks. The avatar must speak what people see, so this module turns
that markup into words. It is pure (no platform SDK imports, no I/O): names come from resolver
callbacks, which the adapters back with their own cached look-ups. A resolver that returns None or
"" (unknown id, failed look-up) yields a neutral word, never the raw id.

It also decides which messages are worth forwarding at all (`discord_forwardable`,
`slack_forwardable`); see docs/platform-payloads.md for the payload shapes behind each rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

Resolver = Callable[[str], str | None]
"""Maps a platform id to a display name; None or "" when unknown."""

SOMEONE = "someone"
A_CHANNEL = "a channel"
A_ROLE = "a role"
A_LINK = "a link"

# Private-use code points stand in for text that later steps must not touch (code, escaped marks).
_HOLD_BASE = 0xF0000
_HOLD = re.compile("[\U000f0000-\U000fffff]")


class _Held:
    """Keeps verbatim pieces out of the way of the markup passes, then puts them back."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def hold(self, piece: str) -> str:
        self.pieces.append(piece)
        return chr(_HOLD_BASE + len(self.pieces) - 1)

    def restore(self, text: str) -> str:
        return _HOLD.sub(lambda m: self.pieces[ord(m.group()) - _HOLD_BASE], text)


def _name(resolve: Resolver | None, ident: str, fallback: str) -> str:
    name = resolve(ident) if resolve is not None else None
    return name.strip() if name and name.strip() else fallback


def _host(url: str) -> str:
    """The site a link points to, as people say it ("example.com"), or "a link"."""
    if url.lower().startswith("mailto:"):
        return url[7:].split("?", 1)[0] or A_LINK
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    host = host.removeprefix("www.")
    return host or A_LINK


def _emoji_words(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip()


def _tidy(text: str) -> str:
    """Collapse runs of blanks, keep single line breaks, trim."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip()


def _mark_pattern(mark: str) -> re.Pattern[str]:
    """A paired emphasis mark on word boundaries (so snake_case and 2*3*4 stay as typed).

    The content may not contain the mark itself, which keeps matching linear on long texts
    full of unpaired marks (a backtracking `.+?` took tens of seconds on 60 kB of " *a").
    """
    m, c = re.escape(mark), re.escape(mark[0])
    rest = re.escape(mark[1:])
    content = rf"(?:[^{c}]|{c}(?!{rest}))+?" if rest else rf"[^{c}]+?"
    return re.compile(rf"(?<!\w){m}(?=\S)({content})(?<=\S){m}(?!\w)")


def _strip_marks(text: str, marks: tuple[str, ...]) -> str:
    """Unwrap emphasis, outer marks first, so **bold _and italic_** loses both."""
    for mark in marks:
        text = _mark_pattern(mark).sub(r"\1", text)
    return text


# --------------------------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------------------------

# Control sequences per Slack's message formatting docs: <@U…|name>, <#C…|name>, <!here>,
# <!subteam^S…|@handle>, <!date^…|fallback>, <url|label>, <url>. Labels never contain ">".
_SLACK_SEQUENCE = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_SLACK_SPECIAL = {"here": "everyone here", "channel": "everyone in the channel",
                  "everyone": "everyone", "group": "everyone in the channel"}
_SLACK_ENTITY = re.compile(r"&(amp|lt|gt);")
_SLACK_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_SLACK_EMOJI = re.compile(
    r"(?<!\w):((?:[a-z0-9_+'-]*[a-z][a-z0-9_+'-]*)|[+-]1):(?::skin-tone-\d:)?(?!\w)", re.IGNORECASE
)
_SLACK_CODE_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
_SLACK_CODE = re.compile(r"`([^`\n]+)`")
_SLACK_QUOTE = re.compile(r"^(?:&gt;|>)\s?", re.MULTILINE)


def _slack_sequence(
    match: re.Match[str], resolve_user: Resolver | None, resolve_channel: Resolver | None
) -> str:
    target, label = match.group(1), (match.group(2) or "").strip()
    if target.startswith("@"):
        return _name(resolve_user, target[1:], label.lstrip("@") or SOMEONE)
    if target.startswith("#"):
        name = _name(resolve_channel, target[1:], label.lstrip("#"))
        return f"#{name}" if name else A_CHANNEL
    if target.startswith("!"):
        command = target[1:].split("^", 1)[0]
        if command in _SLACK_SPECIAL:
            return _SLACK_SPECIAL[command]
        if command == "subteam":
            return label.lstrip("@") or "a group"
        return label  # <!date^…|fallback> and anything newer: the fallback Slack shows
    if label:
        return label
    return _host(target) if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) else target


def slack_readable(
    text: str | None,
    resolve_user: Resolver | None = None,
    resolve_channel: Resolver | None = None,
    *,
    emoji: bool = True,
) -> str:
    """Turn Slack message or command text (escaped, mrkdwn) into what a reader would say.

    `emoji=False` drops `:emoji:` codes instead of reading their names. Returns "" when nothing
    readable is left (an empty result means there is nothing to say).
    """
    if not text:
        return ""
    held = _Held()
    out = _SLACK_CODE_BLOCK.sub(lambda m: held.hold(m.group(1)), text)
    out = _SLACK_CODE.sub(lambda m: held.hold(m.group(1)), out)
    out = _SLACK_SEQUENCE.sub(lambda m: _slack_sequence(m, resolve_user, resolve_channel), out)
    out = _SLACK_QUOTE.sub("", out)
    out = _strip_marks(out, ("*", "_", "~"))
    out = _SLACK_EMOJI.sub(lambda m: _emoji_words(m.group(1)) if emoji else "", out)
    # One pass over the entities, last: "&amp;lt;" is someone typing "&lt;", not "<".
    out = _SLACK_ENTITY.sub(lambda m: _SLACK_ENTITIES[m.group(1)], held.restore(out))
    return _tidy(out)


SlackVerdict = Literal["forward", "note", "ignore"]
_SLACK_PLAIN_SUBTYPES = frozenset({None, "", "thread_broadcast", "file_share"})


def slack_forwardable(
    subtype: str | None, has_text: bool, *, has_files: bool = False, is_bot: bool = False
) -> SlackVerdict:
    """What to do with a thread message event.

    `has_text` means `slack_readable` left something to say. People's plain messages and thread
    broadcasts with text are forwarded; so is the comment typed with an upload (`file_share`).
    Files or images alone get at most one quiet "note" that the avatar only hears text. Bot
    messages and every other subtype (edits, deletions, joins, channel changes) are ignored.
    """
    if is_bot or subtype not in _SLACK_PLAIN_SUBTYPES:
        return "ignore"
    if has_text:
        return "forward"
    return "note" if has_files else "ignore"


# --------------------------------------------------------------------------------------------
# Discord
# --------------------------------------------------------------------------------------------

_DISCORD_FENCE = re.compile(r"```(?:[\w+.#-]*\n)?(.*?)\n?```", re.DOTALL)
_DISCORD_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_DISCORD_ESCAPE = re.compile(r"\\([*_~|`>#\[\]()\\<:@-])")
_DISCORD_USER = re.compile(r"<@!?(\d+)>")
_DISCORD_ROLE = re.compile(r"<@&(\d+)>")
_DISCORD_CHANNEL = re.compile(r"<#(\d+)>")
_DISCORD_COMMAND = re.compile(r"</([^:<>]+):\d+>")
_DISCORD_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_DISCORD_TIME = re.compile(r"<t:(-?\d+)(?::([tTdDfFsSR]))?>")
_DISCORD_NAV = re.compile(r"<id:[\w:-]+>")
_DISCORD_MASKED = re.compile(r"\[([^\[\]]+)\]\(<?(https?://[^\s()<>]+)>?(?:\s+\"[^\"]*\")?\)")
_DISCORD_ANGLE_URL = re.compile(r"<(https?://[^\s<>]+)>")
_URL = re.compile(r"https?://[^\s<>]+[^\s<>.,;:!?)\]'\"]")
_DISCORD_LINE_MARK = re.compile(
    r"^[ \t]*(?:#{1,3}\s+|-#\s+|>>>\s?|>\s?|[-*]\s+(?=\S))", re.MULTILINE
)


def _when(seconds: int, style: str | None, now: datetime) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return "some time"
    date = f"{moment.day} {moment:%B %Y}"
    clock = f"{moment:%H:%M} UTC"
    if style == "R":
        return _relative(moment - now)
    if style in ("t", "T"):
        return clock
    if style in ("d", "D"):
        return date
    if style == "F":
        return f"{moment:%A} {date} at {clock}"
    return f"{date} at {clock}"


def _relative(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    past, span = seconds < 0, abs(seconds)
    for unit, size in (("year", 31_536_000), ("month", 2_592_000), ("day", 86_400),
                       ("hour", 3_600), ("minute", 60)):
        if span >= size:
            count = span // size
            amount = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"{amount} ago" if past else f"in {amount}"
    return "just now"


def discord_readable(
    text: str | None,
    resolve_user: Resolver | None = None,
    resolve_role: Resolver | None = None,
    resolve_channel: Resolver | None = None,
    *,
    now: datetime | None = None,
) -> str:
    """Turn Discord message content (markdown plus <@…> style tokens) into what a reader would say.

    `now` anchors relative timestamps (`<t:…:R>`); it defaults to the current time. Returns ""
    when nothing readable is left.
    """
    if not text:
        return ""
    moment = now if now is not None else datetime.now(UTC)
    held = _Held()
    out = _DISCORD_FENCE.sub(lambda m: held.hold(m.group(1)), text)
    out = _DISCORD_CODE.sub(lambda m: held.hold(m.group(2).strip()), out)
    out = _DISCORD_ESCAPE.sub(lambda m: held.hold(m.group(1)), out)
    out = _DISCORD_USER.sub(lambda m: _name(resolve_user, m.group(1), SOMEONE), out)
    out = _DISCORD_ROLE.sub(lambda m: _name(resolve_role, m.group(1), A_ROLE), out)
    out = _DISCORD_CHANNEL.sub(lambda m: _channel(resolve_channel, m.group(1)), out)
    out = _DISCORD_COMMAND.sub(lambda m: f"/{m.group(1)}", out)
    out = _DISCORD_EMOJI.sub(lambda m: _emoji_words(m.group(1)), out)
    out = _DISCORD_TIME.sub(lambda m: _when(int(m.group(1)), m.group(2), moment), out)
    out = _DISCORD_NAV.sub("a server page", out)
    out = _DISCORD_MASKED.sub(lambda m: m.group(1), out)
    out = _DISCORD_ANGLE_URL.sub(lambda m: held.hold(_host(m.group(1))), out)
    out = _URL.sub(lambda m: held.hold(_host(m.group())), out)
    out = _DISCORD_LINE_MARK.sub("", out)
    out = _strip_marks(out, ("**", "__", "~~", "||", "*", "_"))
    return _tidy(held.restore(out))


def discord_mention_ids(text: str | None) -> tuple[list[int], list[int], list[int]]:
    """The user, role and channel ids ``discord_readable`` would ask its resolvers about.

    Lets an adapter look the names up (asynchronously, in bulk) before the pure pass; ids inside
    code spans are included, which costs at most a look-up that is not used.
    """
    if not text:
        return [], [], []

    def ids(pattern: re.Pattern[str]) -> list[int]:
        return list(dict.fromkeys(int(m.group(1)) for m in pattern.finditer(text)))

    return ids(_DISCORD_USER), ids(_DISCORD_ROLE), ids(_DISCORD_CHANNEL)


def _channel(resolve: Resolver | None, ident: str) -> str:
    name = _name(resolve, ident, "")
    return f"#{name}" if name else A_CHANNEL


DiscordVerdict = Literal["forward", "react", "ignore"]
DISCORD_PEOPLE_TYPES = frozenset({0, 19})
"""DEFAULT and REPLY, the only types a person writes; every other type is a system notice."""


def discord_forwardable(
    message_type: int,
    has_text: bool,
    *,
    has_attachments: bool = False,
    has_stickers: bool = False,
    is_forward: bool = False,
) -> DiscordVerdict:
    """What to do with a thread message.

    `has_text` means `discord_readable` left something to say. Only DEFAULT (0) and REPLY (19)
    messages are people talking; renames (4), pins (6), joins (7), member adds (1), thread
    created/starter (18/21) and every other system type are ignored, whatever their content.
    A person's message with nothing to say but an attachment, a sticker or a forward gets a
    reaction instead of a public warning; a person's empty message is ignored.
    """
    if message_type not in DISCORD_PEOPLE_TYPES:
        return "ignore"
    if has_text:
        return "forward"
    return "react" if (has_attachments or has_stickers or is_forward) else "ignore"
