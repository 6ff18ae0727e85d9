"""Session threads: forward people's messages to the avatar, post the avatar's words back.

Routing is keyed by the thread id in SQLite (``chat_bindings``), never by an in-memory map or by
``isinstance(channel, Thread)``: archived or uncached threads arrive as ``PartialMessageable``
and a restarted process must still route them.

Output is throttled per thread: new words are appended to the last bot message with at most one
edit per ``edit_interval_s`` (Discord allows about 5 message writes per 5 s per channel), long
text is split at 2000 characters, and nobody is ever pinged (``AllowedMentions.none()``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from typing import TYPE_CHECKING

import discord

from bot.core.events import AnyEvent, Ended, Transcript, Warning
from bot.core.models import SessionSummary
from bot.core.service import Queued
from bot.core.transcripts import transcript_filename, transcript_text
from bot.platforms.discord.commands import guild_tenant
from bot.platforms.discord.errors import user_text
from bot.platforms.readable import DISCORD_PEOPLE_TYPES, discord_forwardable

if TYPE_CHECKING:
    from bot.platforms.discord.client import AvatarBot

log = logging.getLogger(__name__)

MAX_MESSAGE = 2000
NO_MENTIONS = discord.AllowedMentions.none()
ACCEPTED = "✅"
# The answer to a message with nothing to read out (only an image, a file, a sticker or a
# forward): a muted speaker, "the avatar only hears text", instead of a public warning.
TEXT_ONLY = "🔇"
# Reasons used when the thread itself went away: the summary is not posted into it then
# (posting would unarchive an archived thread, and a deleted one cannot take messages).
THREAD_GONE_REASONS = ("thread archived", "thread locked", "thread deleted")
_MENTION = re.compile(r"<@!?\d+>")


def split_text(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters, at line or word ends."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit)
        if cut <= limit // 2:
            cut = rest.rfind(" ", 0, limit)
        if cut <= limit // 2:
            cut = limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def summary_text(summary: SessionSummary) -> str:
    """The end-of-session line posted into the thread."""
    minutes, seconds = divmod(summary.duration_s, 60)
    why = f" ({summary.reason})" if summary.reason else ""
    return (
        f"🏁 Session with {summary.avatar_name} ended{why}. Length {minutes}m {seconds:02d}s; "
        f"credits used {summary.settled}, refunded {summary.released}."
    )


class Outbox:
    """The throttled writer of one thread."""

    def __init__(self, channel: discord.abc.Messageable, interval_s: float, fresh_after_s: float):
        self.channel = channel
        self.interval_s = interval_s
        self.fresh_after_s = fresh_after_s
        # (text, standalone, attachment as (file name, bytes) or None)
        self.pending: list[tuple[str, bool, tuple[str, bytes] | None]] = []
        self.closing = False
        self.wake = asyncio.Event()
        self._message: discord.Message | None = None
        self._content = ""
        self._dirty = False
        self._break = False
        self._last_write = 0.0

    def push(self, text: str, *, standalone: bool = False,
             attachment: tuple[str, bytes] | None = None) -> None:
        """Queue ``text``; ``standalone`` text gets a message of its own, with ``attachment``."""
        self.pending.append((text, standalone, attachment))
        self.wake.set()

    def new_turn(self) -> None:
        """A person spoke: the next avatar words start a new message below theirs."""
        self._break = True

    async def run(self) -> None:
        """Write queued text, at most one edit per interval, until closed and drained."""
        while not (self.closing and not self.pending):
            await self.wake.wait()
            self.wake.clear()
            delay = self._last_write + self.interval_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            items, self.pending = self.pending, []
            if items:
                await self._write(items)
                self._last_write = time.monotonic()

    async def _write(self, items: list[tuple[str, bool, tuple[str, bytes] | None]]) -> None:
        if time.monotonic() - self._last_write > self.fresh_after_s:
            self._break = True
        for text, standalone, attachment in items:
            self._break = self._break or standalone
            chunks = split_text(text)
            for i, chunk in enumerate(chunks):
                fits = len(self._content) + 1 + len(chunk) <= MAX_MESSAGE
                if self._message is not None and not self._break and fits:
                    self._content += "\n" + chunk
                    self._dirty = True
                    continue
                await self._flush_edit()
                if attachment is not None and i == len(chunks) - 1:
                    # The file goes with the message (multipart: payload_json + files[0]).
                    name, data = attachment
                    self._message = await self.channel.send(
                        chunk, file=discord.File(io.BytesIO(data), filename=name),
                        allowed_mentions=NO_MENTIONS,
                    )
                else:
                    self._message = await self.channel.send(chunk, allowed_mentions=NO_MENTIONS)
                self._content, self._break = chunk, False
            self._break = self._break or standalone
        await self._flush_edit()

    async def _flush_edit(self) -> None:
        if self._dirty and self._message is not None:
            self._dirty = False
            await self._message.edit(content=self._content, allowed_mentions=NO_MENTIONS)


class ThreadRelay:
    """Subscribes to every session's events and writes them into the bound Discord threads.

    Args:
        bot: the Discord client (for channels and the session service).
        edit_interval_s: the least time between two writes into one thread.
        fresh_after_s: after this long without output, avatar words start a new message.
    """

    def __init__(self, bot: AvatarBot, *, edit_interval_s: float = 1.0,
                 fresh_after_s: float = 30.0) -> None:
        self.bot = bot
        self.edit_interval_s = edit_interval_s
        self.fresh_after_s = fresh_after_s
        self._outboxes: dict[int, Outbox] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._main: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        # session id -> whether its guild is on this process's shards (sharded clients only)
        self._held: dict[str, bool] = {}

    def start(self) -> None:
        """Begin listening to the event hub."""
        if self._main is None:
            self._main = asyncio.create_task(self._listen(), name="discord-thread-relay")

    async def close(self) -> None:
        """Stop listening and cancel pending writes."""
        tasks = [t for t in (self._main, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._main = None
        self._tasks.clear()
        self._outboxes.clear()

    def new_turn(self, thread_id: int) -> None:
        """A person posted in ``thread_id``; the answer goes below their message."""
        outbox = self._outboxes.get(thread_id)
        if outbox is not None:
            outbox.new_turn()

    async def _listen(self) -> None:
        async with self.bot.service.events.subscribe(None) as queue:
            self.subscribed.set()
            while True:
                event = await queue.get()
                try:
                    await self._handle(event)
                except Exception:
                    log.exception("could not relay a session event to Discord")

    async def _handle(self, event: AnyEvent) -> None:
        if isinstance(event, Transcript):
            if event.speaker != "avatar" or not event.final or not event.text.strip():
                return
            text, standalone = event.text, False
        elif isinstance(event, Warning):
            text, standalone = f"⏳ {event.text}", True
        elif isinstance(event, Ended):
            text, standalone = summary_text(event.summary), True
        else:
            return
        if isinstance(event, Ended):
            held = self._held.pop(event.session_id, None)
        else:
            held = self._held.get(event.session_id)
        if held is False:
            return  # known to be another worker's shard: no need to read its bindings
        bindings = await self.bot.bindings.for_session(event.session_id)
        for binding in bindings:
            if binding.platform != "discord":
                continue
            if held is None:
                held = await self._holds(event.session_id)
                if not isinstance(event, Ended):
                    self._held[event.session_id] = held
            if not held:
                return  # another worker's shard holds the guild: that worker posts it
            thread_id = int(binding.thread_id)
            if isinstance(event, Ended):
                await self._end(binding.channel_id, binding.message_id, thread_id, text,
                                event.summary)
            else:
                self._outbox(thread_id).push(text, standalone=standalone)

    async def _holds(self, session_id: str) -> bool:
        """Whether the session's guild is on this process's shards.

        With shards split across workers every worker gets every session's events (the hub
        across workers, docs/scale-out.md); only the one whose shard holds the guild posts.
        """
        if self.bot.shard_count is None:
            return True
        tenant = (await self.bot.service.get(session_id)).tenant
        platform, _, guild = tenant.partition(":")
        return platform == "discord" and guild.isdigit() and self.bot.holds_guild(int(guild))

    async def _end(self, channel_id: str, message_id: str | None, thread_id: int, text: str,
                   summary: SessionSummary) -> None:
        if summary.reason not in THREAD_GONE_REASONS:
            attachment = await self._transcript(summary)
            outbox = self._outbox(thread_id)
            outbox.push(text, standalone=True, attachment=attachment)
            outbox.closing = True
        else:
            self._drop(thread_id)
        if message_id is not None:
            await self._disable_buttons(int(channel_id), int(message_id), summary)

    async def _transcript(self, summary: SessionSummary) -> tuple[str, bytes] | None:
        """The session's kept transcript as a file for the end summary (None when empty)."""
        try:
            lines = await self.bot.service.transcript(summary.session_id)
        except Exception:
            log.exception("could not read the transcript to attach")
            return None
        if not lines:
            return None
        text = transcript_text(summary.avatar_name, lines)
        return transcript_filename(summary.session_id), text.encode()

    async def _disable_buttons(self, channel_id: int, message_id: int,
                               summary: SessionSummary) -> None:
        """Turn the session message's Stop button off (the link is no use any more either)."""
        from bot.platforms.discord.views import session_view

        message = self.bot.get_partial_messageable(channel_id).get_partial_message(message_id)
        try:
            await message.edit(
                content=f"This session with {summary.avatar_name} has ended.",
                view=session_view(summary.session_id, None, ended=True),
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException:
            log.warning("could not update the session message", exc_info=True)

    def _outbox(self, thread_id: int) -> Outbox:
        outbox = self._outboxes.get(thread_id)
        if outbox is None:
            channel = self.bot.get_partial_messageable(
                thread_id, type=discord.ChannelType.public_thread
            )
            outbox = Outbox(channel, self.edit_interval_s, self.fresh_after_s)
            self._outboxes[thread_id] = outbox
            self._tasks[thread_id] = asyncio.create_task(
                self._drain(thread_id, outbox), name=f"discord-thread-{thread_id}"
            )
        return outbox

    async def _drain(self, thread_id: int, outbox: Outbox) -> None:
        try:
            await outbox.run()
        except discord.HTTPException as exc:
            log.warning("stopped writing to thread %s: %s", thread_id, exc.status)
        finally:
            if self._outboxes.get(thread_id) is outbox:
                del self._outboxes[thread_id]
                self._tasks.pop(thread_id, None)

    def _drop(self, thread_id: int) -> None:
        self._outboxes.pop(thread_id, None)
        task = self._tasks.pop(thread_id, None)
        if task is not None:
            task.cancel()


async def route_message(bot: AvatarBot, message: discord.Message) -> None:
    """Forward a person's message in a session thread to the avatar as ask or say.

    Only DEFAULT and REPLY messages are people talking (``discord_forwardable``): a thread
    rename, a pin, a member added and every other system message reach nothing. Mentions, emoji,
    links and markdown are read as a person would read them out (``names.NameResolver``). A
    message with nothing to read out but an attachment, sticker or forward gets the
    ``TEXT_ONLY`` reaction.
    """
    if message.guild is None or message.author.bot:
        return
    if bot.user is not None and message.author.id == bot.user.id:
        return
    if message.type.value not in DISCORD_PEOPLE_TYPES:
        return  # checked before any look-up: system messages cost nothing
    # Its turn in the thread, taken before anything is awaited (discord.py starts one task per
    # gateway event, in the gateway's order): at most ``LOOKUPS_IN_FLIGHT`` messages are looked
    # up at a time, a thread's in the order they came, and the wait for the vendor comes after
    # (docs/backpressure.md).
    async with bot.intake.arrive(str(message.channel.id)):
        outcome = await _queue(bot, message)
    if outcome is None:
        return
    if isinstance(outcome, str):  # TEXT_ONLY
        await _react(message, TEXT_ONLY)
        return
    try:
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, Queued)
        await outcome.sent()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one reply, as for commands
        await _reply(message, user_text(exc))
        return
    await _react(message, ACCEPTED)


async def _queue(bot: AvatarBot, message: discord.Message) -> Queued | BaseException | str | None:
    """A thread message's look-ups, then its place in the session's queue (no vendor wait).

    Returns the queued message, the refusal to reply with, ``TEXT_ONLY`` (react so), or None.
    """
    assert message.guild is not None
    binding = await bot.bindings.for_thread("discord", str(message.channel.id))
    if binding is None:
        return None
    text = message.content
    if bot.mention_mode:
        # Without the message-content intent only messages that mention the bot carry text.
        if bot.user is None or not any(u.id == bot.user.id for u in message.mentions):
            return None
        text = _MENTION.sub("", text)
    readable = await bot.names.readable(message.guild, text, message.mentions)
    verdict = discord_forwardable(
        message.type.value, bool(readable), has_attachments=bool(message.attachments),
        has_stickers=bool(message.stickers), is_forward=_is_forward(message),
    )
    if verdict == "ignore":
        return None
    if verdict == "react":
        return TEXT_ONLY
    bot.relay.new_turn(message.channel.id)
    try:
        return await bot.service.enqueue(
            binding.session_id, readable, author=message.author.display_name,
            tenant=guild_tenant(message.guild.id),
        )
    except Exception as exc:  # noqa: BLE001 - replied to after the turn
        return exc


def _is_forward(message: discord.Message) -> bool:
    ref = message.reference
    return (ref is not None and ref.type is discord.MessageReferenceType.forward) or bool(
        message.message_snapshots)


async def _react(message: discord.Message, emoji: str) -> None:
    try:
        await message.add_reaction(emoji)
    except discord.HTTPException:
        log.info("could not react to a thread message", exc_info=True)


async def _reply(message: discord.Message, text: str) -> None:
    try:
        await message.reply(text, mention_author=False, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        log.warning("could not reply in a session thread", exc_info=True)
